"""What the Android demo app (android_demo/) takes from an export bundle, and which ExecuTorch runtime it carries.

- `app_assets(folder)`: the bundle files the app loads, as (source, asset name) pairs: bundle.json, tokenizer.json,
  preprocess.json, the image and text `.pte` of the one scheme it runs (int8 when the bundle has it, else the first in
  bundle.json's `files`, as android_demo/core Bundle.pteFiles picks), labels.json with that scheme's label embeddings
  (or parity/'s label set when the bundle has no labels.json). android_demo/build-apk.sh packs exactly these
  (`python3 mobile_export/bundle/android.py assets BUNDLE`), and `bench --device adb --demo` pushes them.
- `app_runtime_version()`: the executorch-android version the app is built with, from android_demo/gradle.properties
  (`executorchVersion`, the one place Gradle reads it from). ExecuTorch runs old programs on newer runtimes, not the
  reverse, so `runtime_warning` flags a bundle exported by a newer executorch than that (`dcclip-compress verify`).

Standard library only: build-apk.sh runs this file with the system python3.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[2] / "android_demo"
APP_PROPERTIES = APP_DIR / "gradle.properties"
VERSION_KEY = "executorchVersion"
APP_QUANT = "int8"  # the scheme the app loads when the bundle has it (android_demo/core Bundle.pteFiles)


def app_runtime_version(path: Path | None = None) -> str | None:
    """`executorchVersion` from android_demo/gradle.properties, or None when the file or the key is missing."""
    try:
        text = (path or APP_PROPERTIES).read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == VERSION_KEY and not line.lstrip().startswith(("#", "!")):
            return value.strip() or None
    return None


def _release(version: str) -> tuple[int, ...] | None:
    """The release numbers of a version string ("1.5.1", "1.6.0.dev20260101+cpu" -> (1, 6, 0)); None if it has none."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if m is None:
        return None
    parts = [int(p) for p in m.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def runtime_warning(manifest: dict[str, Any], app_version: str | None = None) -> str | None:
    """A warning line when the bundle's programs come from a newer executorch than the app's runtime (an XNNPACK bundle
    only: that is what the app loads); None otherwise, or when either version is unknown."""
    if str(manifest.get("target") or "xnnpack") != "xnnpack":
        return None
    versions = manifest.get("versions")
    exported = versions.get("executorch") if isinstance(versions, dict) else None
    app = app_version if app_version is not None else app_runtime_version()
    if not exported or not app:
        return None
    new, old = _release(str(exported)), _release(app)
    if new is None or old is None or new <= old:
        return None
    return (f"warning: exported with executorch {exported}, newer than the Android demo's runtime {app} "
            f"(android_demo/gradle.properties {VERSION_KEY}); ExecuTorch runs old programs on newer runtimes, not the "
            f"reverse: set {VERSION_KEY}={exported} (or newer) before building the app")


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def app_quant(files: dict[str, Any]) -> str:
    """The scheme the app runs: int8 when bundle.json's `files` has it, else the first one listed."""
    if not isinstance(files, dict) or not files:
        raise ValueError("bundle.json: 'files' names no .pte")
    return APP_QUANT if APP_QUANT in files else next(iter(files))


def app_assets(folder: str | Path) -> list[tuple[str, str]]:
    """(path relative to the bundle, asset name under assets/bundle/) of every file the app loads from `folder`."""
    folder = Path(folder)
    bundle = _json(folder / "bundle.json")
    files = bundle.get("files")
    quant = app_quant(files)
    towers = files[quant]
    if not isinstance(towers, dict) or not all(isinstance(towers.get(t), str) for t in ("image", "text")):
        raise ValueError(f"{folder / 'bundle.json'}: files.{quant} is not {{image, text}}")
    names = ["bundle.json", "tokenizer.json", towers["image"], towers["text"]]
    names += [n for n in ("preprocess.json",) if (folder / n).is_file()]
    out = [(n, n) for n in names]
    if (folder / "labels.json").is_file():
        labels = _json(folder / "labels.json")
        emb = labels.get("embeddings") or {}
        if isinstance(emb, dict) and emb:  # the app reads its scheme's rows when listed, else the first
            entry = emb.get(quant) if quant in emb else next(iter(emb.values()))
            out.append(("labels.json", "labels.json"))
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                out.append((entry["file"], entry["file"]))
    elif (folder / "parity" / "parity.json").is_file():  # the app's label set from parity/ (tiny bundles)
        parity = _json(folder / "parity" / "parity.json")
        out.append(("parity/parity.json", "labels.json"))
        for lang in (parity.get("langs") or {}).values():
            if isinstance(lang, dict) and isinstance(lang.get("file"), str):
                out.append((f"parity/{lang['file']}", lang["file"]))
    missing = [src for src, _ in out if not (folder / src).is_file()]
    if missing:
        raise ValueError(f"{folder}: {missing[0]} is missing (the app loads it)")
    return out


def main(argv: list[str]) -> int:
    """`android.py assets BUNDLE`: one "SOURCE<TAB>ASSET" line per file; `android.py version`: the app's runtime."""
    if len(argv) == 2 and argv[0] == "assets":
        try:
            pairs = app_assets(argv[1])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(f"{src}\t{dst}" for src, dst in pairs))
        return 0
    if argv == ["version"]:
        print(app_runtime_version() or "")
        return 0
    print("usage: android.py assets BUNDLE | android.py version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
