"""The on-disk format of a teacher-feature cache: folder layout, safetensors shard files, the manifest's name.

Layout of a cache folder:
- `shard-00000.safetensors`, ...: one file per run of samples, all K views of each; row `index * K + view`. Tensors
  (fp16 unless noted): `image_embedding` (R, D), `map_<i>` (R, C_i, h_i, w_i), and per language `<lang>_embedding`
  (R, D), `<lang>_hidden` (R, H) and `has_<lang>` (R,) uint8 (rows without a caption in that language are zeros).
  Each shard's metadata holds the cache's match fingerprint, its row range and the sha256 of its data section, so a
  shard can be checked on its own; each is written atomically (temp file, then rename), so one that exists is whole.
- `manifest.json`, written last: format version, the match fingerprint (teacher identity and taps, augmentation
  seed, data config, views, sample count and hash, training code version), target shapes, tensor shapes/dtypes,
  per-shard row ranges, sizes and sha256. No manifest = an unfinished cache; `write_cache` resumes it.

Shards are written here byte-for-byte the same for the same arrays (sorted tensor names, header padded to 8 bytes),
which is what lets a resumed build end identical to an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from compress.atomic import atomic_path

FORMAT = "dcclip-teacher-cache"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_BYTES = 256 << 20  # default shard size: about this many bytes of features per file
SHARD_NAME = re.compile(r"^shard-(\d{5,})\.safetensors$")
NP_DTYPES = {"F16": np.float16, "U8": np.uint8}
DTYPE_NAMES = {np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8"}


def shard_name(i: int) -> str:
    """File name of shard `i`."""
    return f"shard-{i:05d}.safetensors"


def read_header(path: Path) -> tuple[dict, int]:
    """(safetensors header, byte offset of the data section)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("too short for a safetensors file")
        n = int.from_bytes(head, "little")
        if n > 100 << 20:
            raise ValueError("header length is implausible")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("truncated header")
    return json.loads(raw), 8 + n


def write_shard(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[int, str]:
    """Write a safetensors file (sorted tensor names, header padded to 8 bytes) atomically, byte-for-byte the same
    for the same arrays; returns (size, sha256 of the file). The data section's sha256 goes into the metadata."""
    names = sorted(arrays)
    data_hash = hashlib.sha256()
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        a = np.ascontiguousarray(arrays[name])
        arrays[name] = a
        header[name] = {"dtype": DTYPE_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        data_hash.update(memoryview(a).cast("B"))
    header = {"__metadata__": {**metadata, "data_sha256": data_hash.hexdigest()}, **header}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    file_hash = hashlib.sha256()
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            for block in (len(raw).to_bytes(8, "little"), raw):
                f.write(block)
                file_hash.update(block)
            for name in names:
                view = memoryview(arrays[name]).cast("B")
                f.write(view)
                file_hash.update(view)
            f.flush()
            os.fsync(f.fileno())
    return 8 + len(raw) + offset, file_hash.hexdigest()


def shard_ok(path: Path, fp: str, rows: tuple[int, int], layout: dict[str, list]) -> bool:
    """A shard written by this cache (fingerprint, rows and tensor layout) whose data section checks out."""
    try:
        header, start = read_header(path)
        meta = header.get("__metadata__", {})
        if meta.get("fingerprint") != fp or meta.get("rows") != f"{rows[0]}:{rows[1]}":
            return False
        n = rows[1] - rows[0]
        for name, (dtype, shape) in layout.items():
            info = header.get(name)
            if info is None or info["dtype"] != dtype or info["shape"] != [n, *shape]:
                return False
        end = max(info["data_offsets"][1] for k, info in header.items() if k != "__metadata__")
        if path.stat().st_size != start + end:
            return False
        h = hashlib.sha256()
        with path.open("rb") as f:
            f.seek(start)
            while block := f.read(8 << 20):
                h.update(block)
        return h.hexdigest() == meta.get("data_sha256")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def stored_match(folder: Path) -> dict | None:
    """The fingerprint the cache files already in `folder` were written for (manifest, else any shard), or None."""
    manifest = folder / MANIFEST
    try:
        if manifest.is_file():
            return read_json(manifest)["match"]
        for p in sorted(folder.iterdir()):
            if SHARD_NAME.match(p.name):
                return json.loads(read_header(p)[0]["__metadata__"]["match"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable (a probe: callers say what to do)."""
    from compress.errors import UserError
    from compress.readers import read_json as read

    try:
        return read(path, "teacher cache file", "", kind=None)
    except UserError:
        return None


def human_size(n: int) -> str:
    """Bytes for a person: 1.2 GB, 45.5 kB, 12 B."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
