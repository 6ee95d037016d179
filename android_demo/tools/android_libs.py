"""The AAR route of android_demo/build-apk.sh: unpack Android libraries for dx, then check the dex against them.

  android_libs.py unpack --classes DIR --jni DIR [--abi ABI ...] LIB.aar|LIB.jar ...
      every .class of each library (an AAR's classes.jar and libs/*.jar, or a plain jar) into DIR (the dex input), and
      each AAR's jni/<abi>/*.so into JNI/<abi>/ (packed as the APK's lib/<abi>/).
  android_libs.py check --platform android.jar [--dex classes.dex ...] [--root PREFIX ...] [--allow-missing PREFIX ...]
                        CLASSES ...
      starting from the app's classes (--root, default org/dcclip/), follow every class a class file names in its
      constant pool; each one must be in the dex (or, without --dex, among CLASSES) or in the platform jar. The first
      failure is one line naming the missing class, who uses it and which library brings it.

Why: ExecuTorch's org.pytorch.executorch.Module imports fbjni (com.facebook.jni.HybridData) and SoLoader's
nativeloader (com.facebook.soloader.nativeloader.NativeLoader). An APK dexed from the executorch AAR alone installs,
then dies with NoClassDefFoundError on the first Module.load. Standard library only (build-apk.sh runs it with python3).
"""
from __future__ import annotations

import argparse
import io
import re
import struct
import sys
import zipfile
from collections import deque
from pathlib import Path

# Where a missing class comes from: (package prefix, what to add); {versions} from android_demo/gradle.properties.
HINTS = (
    ("org/pytorch/executorch/", "the ExecuTorch AAR (EXECUTORCH_AAR=.../executorch-android-{executorchVersion}.aar, "
                                "org.pytorch:executorch-android:{executorchVersion})"),
    ("com/facebook/jni/", "fbjni (FBJNI_AAR=.../fbjni-{fbjniVersion}.aar, com.facebook.fbjni:fbjni:{fbjniVersion})"),
    ("com/facebook/soloader/", "SoLoader's nativeloader (SOLOADER_AAR=.../nativeloader-{soloaderNativeloaderVersion}.jar, "
                               "com.facebook.soloader:nativeloader:{soloaderNativeloaderVersion})"),
    ("kotlin/", "the Kotlin standard library (its jar in ANDROID_LIBS=DIR, org.jetbrains.kotlin:kotlin-stdlib)"),
)
PROPERTIES = Path(__file__).resolve().parents[1] / "gradle.properties"


def _versions() -> dict[str, str]:
    """key=value lines of android_demo/gradle.properties; a missing key reads as "<key>"."""
    out: dict[str, str] = {}
    try:
        for line in PROPERTIES.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith(("#", "!")):
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


class LibError(Exception):
    """A one-line error for the build script."""


# ------------------------------------------------------------------------------------------------- class files
def class_refs(data: bytes) -> tuple[str, set[str]]:
    """(this class, every other class its constant pool names) of one .class file; array types give their element."""
    if data[:4] != b"\xca\xfe\xba\xbe":
        raise LibError("not a class file")
    count = struct.unpack_from(">H", data, 8)[0]
    utf8: dict[int, str] = {}
    class_names: dict[int, int] = {}
    i, pos = 1, 10
    while i < count:
        tag = data[pos]
        pos += 1
        if tag == 1:  # Utf8 (modified UTF-8; class names are plain enough for a lenient decode)
            n = struct.unpack_from(">H", data, pos)[0]
            utf8[i] = data[pos + 2:pos + 2 + n].decode("utf-8", "replace")
            pos += 2 + n
        elif tag == 7:  # Class
            class_names[i] = struct.unpack_from(">H", data, pos)[0]
            pos += 2
        elif tag in (8, 16, 19, 20):  # String, MethodType, Module, Package
            pos += 2
        elif tag == 15:  # MethodHandle
            pos += 3
        elif tag in (3, 4, 9, 10, 11, 12, 17, 18):  # Integer, Float, *ref, NameAndType, Dynamic, InvokeDynamic
            pos += 4
        elif tag in (5, 6):  # Long, Double: two slots
            pos += 8
            i += 1
        else:
            raise LibError(f"unknown constant pool tag {tag}")
        i += 1
    this = utf8.get(class_names.get(struct.unpack_from(">H", data, pos + 2)[0], -1), "")
    refs = set()
    for name_index in class_names.values():
        name = utf8.get(name_index, "")
        if name.startswith("["):  # [[Lpkg/Cls; -> pkg/Cls; primitive arrays name nothing
            name = name.lstrip("[")
            if not (name.startswith("L") and name.endswith(";")):
                continue
            name = name[1:-1]
        if name and name != this:
            refs.add(name)
    return this, refs


def _is_class_entry(name: str) -> bool:
    return name.endswith(".class") and not name.startswith("META-INF/") and not name.endswith("module-info.class")


def read_classes(sources: list[Path]) -> dict[str, bytes]:
    """Internal name (pkg/Cls) -> class file bytes, from folders of .class files and jars."""
    out: dict[str, bytes] = {}
    for src in sources:
        if src.is_dir():
            for f in sorted(src.rglob("*.class")):
                rel = f.relative_to(src).as_posix()
                if _is_class_entry(rel):
                    out[rel[:-6]] = f.read_bytes()
        elif zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                for name in z.namelist():
                    if _is_class_entry(name):
                        out[name[:-6]] = z.read(name)
        else:
            raise LibError(f"{src}: not a folder of classes or a jar")
    return out


def jar_class_names(path: Path) -> set[str]:
    """The classes a jar holds (the platform: android.jar), without reading them."""
    try:
        with zipfile.ZipFile(path) as z:
            return {n[:-6] for n in z.namelist() if _is_class_entry(n)}
    except (OSError, zipfile.BadZipFile) as e:
        raise LibError(f"{path}: not a readable jar ({e})") from None


# ------------------------------------------------------------------------------------------------- dex files
def _uleb128(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def dex_classes(data: bytes) -> set[str]:
    """The classes a .dex defines (its class_defs), as internal names."""
    if data[:4] != b"dex\n" or len(data) < 0x70:
        raise LibError("not a dex file")
    string_ids_off = struct.unpack_from("<I", data, 0x3C)[0]
    type_ids_off = struct.unpack_from("<I", data, 0x44)[0]
    class_defs_size, class_defs_off = struct.unpack_from("<II", data, 0x60)

    def string(idx: int) -> str:
        off = struct.unpack_from("<I", data, string_ids_off + 4 * idx)[0]
        _, start = _uleb128(data, off)
        end = data.index(b"\0", start)
        return data[start:end].decode("utf-8", "replace")

    out = set()
    for k in range(class_defs_size):
        type_idx = struct.unpack_from("<I", data, class_defs_off + 32 * k)[0]
        desc = string(struct.unpack_from("<I", data, type_ids_off + 4 * type_idx)[0])
        if desc.startswith("L") and desc.endswith(";"):
            out.add(desc[1:-1])
    return out


# ------------------------------------------------------------------------------------------------- the check
def missing_classes(classes: dict[str, bytes], present: set[str], platform: set[str], roots: list[str],
                    allow_missing: list[str] = ()) -> list[tuple[str, str]]:
    """(missing class, the class that uses it) for every class reachable from the roots' classes that is neither
    present (in the dex) nor in the platform, in the order found."""
    start = sorted(c for c in classes if any(c.startswith(r) for r in roots))
    seen = set(start)
    queue = deque(start)
    missing: dict[str, str] = {}
    for c in start:
        if c not in present:
            missing.setdefault(c, "(the app itself)")
    while queue:
        c = queue.popleft()
        _, refs = class_refs(classes[c])
        for r in sorted(refs):
            if r in platform or any(r.startswith(p) for p in allow_missing):
                continue
            if r not in present:
                missing.setdefault(r, c)
            elif r in classes and r not in seen:
                seen.add(r)
                queue.append(r)
    return list(missing.items())


def _dotted(name: str) -> str:
    return name.replace("/", ".")


def explain(missing: list[tuple[str, str]], what: str) -> str:
    """One line: the first missing class, who uses it, where it comes from (and how many more)."""
    cls, user = missing[0]
    versions = _versions()
    hint = next((h for prefix, h in HINTS if cls.startswith(prefix)), None)
    if hint is not None:
        hint = re.sub(r"\{(\w+)\}", lambda m: versions.get(m.group(1), f"<{m.group(1)}>"), hint)
    more = ""
    if len(missing) > 1:
        others = ", ".join(_dotted(c) for c, _ in missing[1:4]) + (", ..." if len(missing) > 4 else "")
        more = f" (and {len(missing) - 1} more: {others})"
    used = user if user.startswith("(") else f"used by {_dotted(user)}"
    return (f"{what} lacks class {_dotted(cls)}, {used}{more}: "
            + (f"add {hint}" if hint else "add the library that holds it (ANDROID_LIBS=DIR of .aar/.jar)"))


# ------------------------------------------------------------------------------------------------- unpack
def _safe(name: str) -> bool:
    return not name.startswith("/") and ".." not in Path(name).parts


def unpack(libs: list[Path], classes_dir: Path, jni_dir: Path, abis: list[str] = ()) -> list[str]:
    """Unpack each library's classes and native libraries; one summary line per library."""
    lines = []
    classes_dir.mkdir(parents=True, exist_ok=True)
    for lib in libs:
        if not lib.is_file():
            raise LibError(f"{lib}: not found")
        if not zipfile.is_zipfile(lib):
            raise LibError(f"{lib}: not an .aar or .jar (not a zip file)")
        jars: list[tuple[str, bytes]] = []
        natives = 0
        found_abis: set[str] = set()
        with zipfile.ZipFile(lib) as z:
            names = z.namelist()
            if lib.suffix == ".aar" or "AndroidManifest.xml" in names:
                jars += [(n, z.read(n)) for n in names if n == "classes.jar" or (n.startswith("libs/") and n.endswith(".jar"))]
                for n in names:
                    parts = n.split("/")
                    if len(parts) == 3 and parts[0] == "jni" and parts[2].endswith(".so") and _safe(n):
                        if abis and parts[1] not in abis:
                            continue
                        out = jni_dir / parts[1] / parts[2]
                        data = z.read(n)
                        if out.is_file() and out.read_bytes() != data:
                            lines.append(f"note: {lib.name}'s {n} differs from an earlier library's; kept the earlier")
                            continue
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(data)
                        natives += 1
                        found_abis.add(parts[1])
            else:
                jars.append((lib.name, lib.read_bytes()))
        count = 0
        for jar_name, data in jars:
            try:
                inner = zipfile.ZipFile(io.BytesIO(data))
            except zipfile.BadZipFile:
                raise LibError(f"{lib}: {jar_name} is not a jar") from None
            with inner:
                for n in inner.namelist():
                    if _is_class_entry(n) and _safe(n):
                        out = classes_dir / n
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(inner.read(n))
                        count += 1
        if count == 0 and natives == 0:
            raise LibError(f"{lib}: holds no classes and no jni/ libraries")
        lines.append(f"{lib.name}: {count} classes, {natives} native libraries"
                     + (f" ({', '.join(sorted(found_abis))})" if found_abis else ""))
    return lines


# ------------------------------------------------------------------------------------------------- command line
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="android_libs.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("unpack")
    u.add_argument("--classes", type=Path, required=True)
    u.add_argument("--jni", type=Path, required=True)
    u.add_argument("--abi", action="append", default=[])
    u.add_argument("libs", type=Path, nargs="+")
    c = sub.add_parser("check")
    c.add_argument("--platform", type=Path, action="append", default=[])
    c.add_argument("--dex", type=Path, action="append", default=[])
    c.add_argument("--root", action="append", default=[])
    c.add_argument("--allow-missing", action="append", default=[])
    c.add_argument("classes", type=Path, nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "unpack":
            for line in unpack(args.libs, args.classes, args.jni, [a for s in args.abi for a in s.replace(",", " ").split()]):
                print(line)
            return 0
        classes = read_classes(args.classes)
        platform: set[str] = set()
        for jar in args.platform:
            platform |= jar_class_names(jar)
        if args.dex:
            present: set[str] = set()
            for dex in args.dex:
                try:
                    present |= dex_classes(dex.read_bytes())
                except (OSError, LibError) as e:
                    raise LibError(f"{dex}: {e}") from None
            what = ", ".join(d.name for d in args.dex)
        else:
            present, what = set(classes), "the dex input"
        missing = missing_classes(classes, present, platform, args.root or ["org/dcclip/"],
                                  [p.replace(".", "/") for p in args.allow_missing])
    except (LibError, OSError, struct.error, IndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if missing:
        print(f"error: {explain(missing, what)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
