"""The Android build around the Java code, offline: the AAR route's unpack and dex class check
(android_demo/tools/android_libs.py, on stand-in AARs compiled here from Java sources), the files the APK packs
(mobile_export/bundle/android.py), the pinned ExecuTorch runtime and `verify`'s warning, the Gradle wrapper script,
and `make run` needing no Java. Nothing is downloaded; android_demo/build-apk.sh itself needs Debian's Android tools
(`make android`)."""
from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mobile_export.bundle.android import app_assets, app_runtime_version, runtime_warning

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
LIBS_TOOL = DEMO / "tools" / "android_libs.py"

# Stand-ins with the shape of the real thing: the app calls Module.load; ExecuTorch's Module imports fbjni's HybridData
# and SoLoader's NativeLoader; HybridData loads its library through NativeLoader too.
SOURCES = {
    "org/dcclip/demo/App.java": """package org.dcclip.demo;
public class App { public static Object run(String path) { return org.pytorch.executorch.Module.load(path); } }""",
    "org/pytorch/executorch/Module.java": """package org.pytorch.executorch;
import com.facebook.jni.HybridData;
import com.facebook.soloader.nativeloader.NativeLoader;
public class Module {
    static { NativeLoader.loadLibrary("executorch"); }
    private final Object peer;
    private Module(Object peer) { this.peer = peer; }
    public static Module load(String path) { return new Module(new HybridData()); }
}""",
    "com/facebook/jni/HybridData.java": """package com.facebook.jni;
public class HybridData { public HybridData() { com.facebook.soloader.nativeloader.NativeLoader.loadLibrary("fbjni"); } }""",
    "com/facebook/soloader/nativeloader/NativeLoader.java": """package com.facebook.soloader.nativeloader;
public class NativeLoader { public static boolean loadLibrary(String name) { return name.isEmpty(); } }""",
    # not reachable from the app: what it names (java.util.function, absent from API 23's android.jar) must not count
    "com/facebook/soloader/nativeloader/Unused.java": """package com.facebook.soloader.nativeloader;
public class Unused { public static Object f() { return java.util.function.Function.identity(); } }""",
}
PLATFORM = ["java/lang/Object", "java/lang/String", "java/lang/System"]  # a stand-in android.jar


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _jar(classes: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        for f in sorted(classes.rglob("*.class")):
            rel = f.relative_to(classes).as_posix()
            if rel.startswith(prefix):
                z.writestr(rel, f.read_bytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    """The app's classes, executorch.aar (+ jni/arm64-v8a/libexecutorch.so), fbjni.aar (+ libfbjni.so),
    nativeloader.jar and a stand-in platform jar, compiled here with javac."""
    if shutil.which("javac") is None:
        pytest.fail("javac not found: `make test` installs the JDK (java-tools)")
    root = tmp_path_factory.mktemp("aars")
    src, out = root / "src", root / "classes"
    for rel, text in SOURCES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    proc = subprocess.run(["javac", "--release", "8", "-nowarn", "-d", str(out), *map(str, sorted(src.rglob("*.java")))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    app = root / "app-classes"
    shutil.copytree(out / "org/dcclip", app / "org/dcclip")
    manifest = b'<manifest package="x"/>'
    return {
        "app": app,
        "executorch": _zip(root / "executorch-android.aar", {"AndroidManifest.xml": manifest, "classes.jar": _jar(out, "org/pytorch/"),
                                                             "jni/arm64-v8a/libexecutorch.so": b"\x7fELF-executorch",
                                                             "jni/x86_64/libexecutorch.so": b"\x7fELF-executorch-x86"}),
        "fbjni": _zip(root / "fbjni.aar", {"AndroidManifest.xml": manifest, "classes.jar": _jar(out, "com/facebook/jni/"),
                                           "jni/arm64-v8a/libfbjni.so": b"\x7fELF-fbjni"}),
        "soloader": _write_bytes(root / "nativeloader.jar", _jar(out, "com/facebook/soloader/")),
        "platform": _zip(root / "android.jar", {f"{c}.class": b"" for c in PLATFORM}),
    }


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LIBS_TOOL), *map(str, args)], capture_output=True, text=True, timeout=60)


def _dex(path: Path, classes: list[str]) -> Path:
    """A minimal .dex as far as the check reads it: header offsets, string_ids, type_ids and class_defs."""
    strings = [f"L{c};".encode() for c in classes]
    header = 0x70
    string_ids_off = header
    type_ids_off = string_ids_off + 4 * len(strings)
    class_defs_off = type_ids_off + 4 * len(strings)
    data_off = class_defs_off + 32 * len(classes)
    data, offsets = b"", []
    for s in strings:
        offsets.append(data_off + len(data))
        data += bytes([len(s)]) + s + b"\0"  # uleb128 length (< 128) + MUTF-8 + NUL
    head = bytearray(header)
    head[0:8] = b"dex\n035\0"
    struct.pack_into("<II", head, 0x38, len(strings), string_ids_off)
    struct.pack_into("<II", head, 0x40, len(strings), type_ids_off)
    struct.pack_into("<II", head, 0x60, len(classes), class_defs_off)
    body = b"".join(struct.pack("<I", o) for o in offsets) + b"".join(struct.pack("<I", i) for i in range(len(strings)))
    body += b"".join(struct.pack("<I", i) + bytes(28) for i in range(len(classes)))
    path.write_bytes(bytes(head) + body + data)
    return path


def _unpack(tmp_path: Path, standins: dict[str, Path], *libs: str) -> Path:
    classes = tmp_path / "classes"
    shutil.copytree(standins["app"], classes, dirs_exist_ok=True)
    if libs:
        proc = _tool("unpack", "--classes", classes, "--jni", tmp_path / "lib", *(standins[name] for name in libs))
        assert proc.returncode == 0, proc.stderr
    return classes


def test_class_check_names_what_executorch_module_lacks(tmp_path, standins):
    classes = _unpack(tmp_path, standins, "executorch")  # the AAR alone: what build-apk.sh did before
    proc = _tool("check", "--platform", standins["platform"], classes)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "lacks class com.facebook.jni.HybridData, used by org.pytorch.executorch.Module" in proc.stderr
    assert "FBJNI_AAR=" in proc.stderr and "com.facebook.soloader.nativeloader.NativeLoader" in proc.stderr

    classes = _unpack(tmp_path, standins, "fbjni")
    proc = _tool("check", "--platform", standins["platform"], classes)
    assert proc.returncode == 1 and "lacks class com.facebook.soloader.nativeloader.NativeLoader" in proc.stderr
    assert "SOLOADER_AAR=" in proc.stderr

    classes = _unpack(tmp_path, standins, "soloader")
    proc = _tool("check", "--platform", standins["platform"], classes)
    assert proc.returncode == 0, proc.stderr  # Unused's java.util.function is not reachable from the app
    assert sorted(p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*.so")) == [
        "arm64-v8a/libexecutorch.so", "arm64-v8a/libfbjni.so", "x86_64/libexecutorch.so"]


def test_class_check_reads_the_dex_and_names_a_class_dx_left_out(tmp_path, standins):
    classes = _unpack(tmp_path, standins, "executorch", "fbjni", "soloader")
    everything = sorted(str(p.relative_to(classes).with_suffix("").as_posix()) for p in classes.rglob("*.class"))
    full = _dex(tmp_path / "full.dex", everything)
    assert _tool("check", "--platform", standins["platform"], "--dex", full, classes).returncode == 0
    partial = _dex(tmp_path / "classes.dex", [c for c in everything if c != "com/facebook/jni/HybridData"])
    proc = _tool("check", "--platform", standins["platform"], "--dex", partial, classes)
    assert proc.returncode == 1 and "classes.dex lacks class com.facebook.jni.HybridData" in proc.stderr, proc.stderr
    bad = _tool("check", "--platform", standins["platform"], "--dex", standins["platform"], classes)
    assert bad.returncode == 2 and "not a dex file" in bad.stderr


def test_without_the_runtime_only_executorch_may_be_missing(tmp_path, standins):
    classes = _unpack(tmp_path, standins)  # the app alone (UI and tokenizer only)
    proc = _tool("check", "--platform", standins["platform"], classes)
    assert proc.returncode == 1 and "org.pytorch.executorch.Module" in proc.stderr and "EXECUTORCH_AAR=" in proc.stderr
    assert _tool("check", "--platform", standins["platform"], "--allow-missing", "org/pytorch/executorch/",
                 classes).returncode == 0


def test_unpack_keeps_only_the_asked_abis_and_rejects_what_is_not_a_library(tmp_path, standins):
    proc = _tool("unpack", "--classes", tmp_path / "c", "--jni", tmp_path / "lib", "--abi", "arm64-v8a",
                 standins["executorch"], standins["fbjni"])
    assert proc.returncode == 0 and "executorch-android.aar: 1 classes, 1 native libraries (arm64-v8a)" in proc.stdout
    assert not (tmp_path / "lib" / "x86_64").exists()
    (tmp_path / "x.aar").write_text("not a zip")
    proc = _tool("unpack", "--classes", tmp_path / "c", "--jni", tmp_path / "lib", tmp_path / "x.aar")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "not a zip" in proc.stderr


# ------------------------------------------------------------------------------------------------- APK contents
def _bundle(tmp_path: Path, schemes=("fp32", "int8", "ptq-int8", "8da8w", "8da4w"), labels=True) -> Path:
    b = tmp_path / "bundle"
    (b / "parity").mkdir(parents=True)
    files = {q: {"image": f"image_{q}.pte", "text": f"text_{q}.pte"} for q in schemes}
    (b / "bundle.json").write_text(json.dumps({"files": files}))
    for name in ("tokenizer.json", "preprocess.json", "manifest.json", "delegation.md", "parity/parity.json",
                 "parity/labels_en.f32", "parity/labels_zh.f32"):
        (b / name).write_text("{}")
    (b / "parity/parity.json").write_text(json.dumps({"langs": {"en": {"file": "labels_en.f32"}, "zh": {"file": "labels_zh.f32"}}}))
    for q in schemes:
        for t in ("image", "text"):
            (b / f"{t}_{q}.pte").write_bytes(b"pte")
            (b / f"{t}_{q}.bpte").write_bytes(b"bpte")
        (b / f"label_embeddings_{q}.f32").write_bytes(b"\0" * 8)
    if labels:
        (b / "labels.json").write_text(json.dumps({"embeddings": {q: {"file": f"label_embeddings_{q}.f32"} for q in schemes}}))
    return b


def test_the_apk_packs_only_the_scheme_the_app_loads(tmp_path):
    b = _bundle(tmp_path)
    assert app_assets(b) == [(n, n) for n in ("bundle.json", "tokenizer.json", "image_int8.pte", "text_int8.pte",
                                              "preprocess.json", "labels.json", "label_embeddings_int8.f32")]
    # build-apk.sh runs the module as a script with the system python3: standard library only
    proc = subprocess.run(["python3", str(REPO / "mobile_export/bundle/android.py"), "assets", str(b)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t") for line in proc.stdout.splitlines()] == [list(p) for p in app_assets(b)]
    assert "android.py\" assets \"$BUNDLE\"" in (DEMO / "build-apk.sh").read_text()
    gradle = (DEMO / "app/build.gradle").read_text()
    assert 'files.containsKey("int8") ? "int8"' in gradle and "include names" in gradle


def test_without_int8_or_labels_the_first_scheme_and_parity_labels_go_in(tmp_path):
    b = _bundle(tmp_path, schemes=("fp32", "8da4w"), labels=False)
    assert app_assets(b) == [("bundle.json", "bundle.json"), ("tokenizer.json", "tokenizer.json"),
                             ("image_fp32.pte", "image_fp32.pte"), ("text_fp32.pte", "text_fp32.pte"),
                             ("preprocess.json", "preprocess.json"), ("parity/parity.json", "labels.json"),
                             ("parity/labels_en.f32", "labels_en.f32"), ("parity/labels_zh.f32", "labels_zh.f32")]
    (b / "text_fp32.pte").unlink()
    proc = subprocess.run(["python3", str(REPO / "mobile_export/bundle/android.py"), "assets", str(b)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "text_fp32.pte is missing" in proc.stderr and proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------------- runtime version
def test_the_app_pins_the_executorch_that_exports():
    pinned = app_runtime_version()
    exporting = importlib.metadata.version("executorch")
    assert pinned == exporting.split("+")[0], f"android_demo/gradle.properties executorchVersion={pinned}, exports {exporting}"
    assert runtime_warning({"target": "xnnpack", "versions": {"executorch": exporting}}) is None
    gradle = (DEMO / "app/build.gradle").read_text()
    assert '"org.pytorch:executorch-android:${executorchVersion}"' in gradle
    assert "executorch-android:1." not in gradle  # the version lives in gradle.properties only


def test_runtime_warning_only_for_a_newer_exporter():
    m = {"target": "xnnpack", "versions": {"executorch": "1.6.0"}}
    line = runtime_warning(m, app_version="1.5.1")
    assert line.startswith("warning: exported with executorch 1.6.0, newer than the Android demo's runtime 1.5.1")
    assert "executorchVersion=1.6.0" in line and "\n" not in line
    assert runtime_warning({**m, "versions": {"executorch": "1.6.0.dev20260101+cpu"}}, "1.5.1") is not None
    for exported in ("1.5.1", "1.5.1+cpu", "1.5.0", "1.5"):
        assert runtime_warning({**m, "versions": {"executorch": exported}}, "1.5.1") is None, exported
    assert runtime_warning({**m, "target": "coreml"}, "1.5.1") is None  # not what the Android app loads
    assert runtime_warning({"versions": {}}, "1.5.1") is None and runtime_warning(m, "") is None


def test_verify_prints_the_warning(tmp_path, monkeypatch):
    from compress.atomic import sha256_file
    from compress.errors import UserError
    from mobile_export.bundle import android
    from mobile_export.bundle.verify import verify_bundle
    from mobile_export.bundle.write import BUNDLE_FORMAT

    props = tmp_path / "gradle.properties"
    props.write_text("# the app\nexecutorchVersion=1.5.1\n")
    monkeypatch.setattr(android, "APP_PROPERTIES", props)
    names = ("bundle.json", "tokenizer.json", "preprocess.json", "labels.json")
    for n in names:
        (tmp_path / n).write_text("{}")
    files = {n: {"bytes": 2, "sha256": sha256_file(tmp_path / n)} for n in names}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": BUNDLE_FORMAT, "target": "xnnpack", "files": files,
                                                        "versions": {"executorch": "9.0.0"}, "programs": {}}))
    lines = []
    with pytest.raises(UserError, match="lists no programs"):  # past the warning, the bundle is empty
        for line in verify_bundle(tmp_path):
            lines.append(line)
    assert lines[0].startswith("files: 4 match") and lines[1].startswith("warning: exported with executorch 9.0.0")


# ------------------------------------------------------------------------------------------------- gradle, make
def test_gradlew_runs_the_pinned_gradle_from_path(tmp_path):
    props = (DEMO / "gradle/wrapper/gradle-wrapper.properties").read_text()
    version = re.search(r"^distributionUrl=.*/gradle-([0-9.]+)-bin\.zip$", props, re.M).group(1)
    assert "distributionSha256Sum=" in props and os.access(DEMO / "gradlew", os.X_OK)
    fake = tmp_path / "bin" / "gradle"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo; echo "Gradle {version}"; exit 0; }}\necho "ran $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "GRADLE_USER_HOME": str(tmp_path / "gh")}
    proc = subprocess.run([str(DEMO / "gradlew"), ":app:assembleDebug"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ran :app:assembleDebug", proc.stderr
    fake.write_text('#!/bin/sh\necho "Gradle 4.4.1"\n')  # Debian's: not the pinned one, and no network here
    env["PATH"] = f"{fake.parent}{os.pathsep}/usr/bin:/bin"
    (tmp_path / "bin" / "curl").write_text("#!/bin/sh\nexit 6\n")
    (tmp_path / "bin" / "curl").chmod(0o755)
    proc = subprocess.run([str(DEMO / "gradlew"), "tasks"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and f"install Gradle {version} on PATH" in proc.stderr.splitlines()[-1]


def test_make_run_needs_no_java():
    run = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "javac" not in run.stdout and "junit4" not in run.stdout, run.stdout
    for target in ("test", "android"):
        dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert "default-jdk-headless junit4" in dry.stdout, target
