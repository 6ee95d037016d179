"""`dcclip-compress verify FOLDER`: an export bundle, or a teacher-feature cache, checked against its own manifest.

Both are folders a user copies between machines (a bundle to a phone, a cache to a GPU box), so both can arrive cut
short or altered; `verify` says so in one line before anything trains on them or ships them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from compress.errors import UserError
from compress.readers import read_json


def _is_teacher_cache(folder: Path) -> bool:
    from compress.train.feature_cache.shards import FORMAT, MANIFEST, SHARD_NAME

    if not folder.is_dir():
        return False
    try:
        doc = read_json(folder / MANIFEST, "manifest", "", kind=None)
    except UserError:  # no readable manifest: a cache when it holds shards (incomplete), else left to the bundle check
        return not (folder / MANIFEST).exists() and any(SHARD_NAME.match(p.name) for p in folder.iterdir())
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def verify_teacher_cache(folder: Path) -> Iterator[str]:
    """Every shard's size, header and sha256 against the manifest (what `CachedTargets(verify="full")` checks)."""
    from compress.train.feature_cache.read import verify_cache

    m = verify_cache(folder)
    yield (f"teacher cache: {m['samples']} samples x {m['views']} views in {len(m['shards'])} shards, every sha256 "
           f"checked (maps: {m.get('maps', 'full')})")


def verify_folder(folder: Path) -> Iterator[str]:
    """What was checked, a line each; the first failure is a one-line UserError."""
    if _is_teacher_cache(folder):
        yield from verify_teacher_cache(folder)
        return
    from mobile_export.bundle.verify import verify_bundle

    yield from verify_bundle(folder)
