"""WebDataset tar shards, the usual layout of real image-text corpora: indexed, their images left on disk.

Recipe: `data: {kind: webdataset, shards: "data/shards/train-{000000..000009}.tar"}` (a brace pattern or a glob,
relative to the working directory). Each sample is a run of tar members sharing a key (the member's path up to
the first dot of its file name), as webdataset's TarWriter and img2dataset write them:

* the image: `<key>.jpg` (or .jpeg .png .webp .bmp .gif .tif .tiff .ppm; the first present in that order);
* its captions, from any of
  - `<key>.json`: {"en": "..." or ["...", ...], "zh": "..." or [...]}; other keys (img2dataset's url, status,
    width, ...) are ignored,
  - `<key>.en.txt` / `<key>.zh.txt`: one caption each (the whole file, stripped),
  - `<key>.txt`, img2dataset's single caption: Chinese if it contains a CJK ideograph, else English.
  Every caption found is kept (duplicates once, in the order above); training draws one of an image's captions at
  random each time it is sampled (`PairSet.more`). A sample with one language only is used for that language; the
  other is None in the PairSet (see its docstring: training masks it).

Damaged samples are skipped and counted by reason, like manifest rows (the reason names of compress.data.manifest,
plus `corrupt_shard`: a shard that stops being a readable tar partway, e.g. a truncated download, keeps the
samples before the damage; and `duplicate_member`: a second member with the same key and extension, ignored).
Samples come in a fixed order: shards sorted by path (numbers in names compared as numbers), whatever order the
filesystem lists them in, then tar member order. Images are decoded and letterboxed exactly as manifest images,
so the same files give the same uint8 pixels either way.

Nothing is held in memory but captions: `load_shards` indexes each shard once (key, captions, and the offset and
size of the image member; cached under .cache/shard-index, keyed by path, size and mtime) and returns `LazyImages`
(compress/data/store.py), which reads and decodes an image when a batch asks for it. Members are read with Python's
`tarfile` (plain .tar only: offsets must be file offsets) under the filters of webdataset's `tar_file_iterator`,
and grouped by webdataset's `group_by_keys`, the layout's reference implementation. Shard files are opened here,
not through webdataset's URL opener, so a pattern can never run a `pipe:` command.
`write_shards` / `manifest_to_shards` turn manifest rows into shards (image bytes copied, not re-encoded).
"""
from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tarfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from braceexpand import UnbalancedBracesError, braceexpand
from webdataset.tariterators import group_by_keys
from webdataset.writer import TarWriter

from compress.atomic import atomic_path
from compress.data.manifest import (
    BAD_JSON, MISSING_FIELD, MISSING_IMAGE, NO_CAPTION, UNSAFE_PATH, ManifestData, RowCollector, _safe_path,
    caption_list, decode_image, parse_json_object, row_captions,
)
from compress.data.store import LazyImages
from compress.data.texts import TextColumnBuilder
from compress.errors import UserError
from compress.home import cache_dir
from compress.prompts import caption_lang
from compress.readers import read_bytes, read_json

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
CORRUPT_SHARD = "corrupt_shard"
DUPLICATE_MEMBER = "duplicate_member"
UNSUPPORTED_IMAGE = "unsupported_image"  # writer only: the image's file suffix is not one of IMAGE_EXTS

_FIX = ("pass data.shards as a brace pattern such as data/shards/train-{000000..000009}.tar or a glob such as "
        "data/shards/*.tar, relative to the working directory")


def _natural_key(path: str) -> list:
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", path))]


def expand_shards(pattern: str) -> list[Path]:
    """The shard files a brace pattern and/or glob names, in natural path order; a one-line UserError if any piece
    of the pattern names no readable file."""
    try:
        names = list(braceexpand(os.path.expanduser(pattern)))
    except UnbalancedBracesError:
        raise UserError(f"data.shards {pattern!r}: unbalanced braces; {_FIX}") from None
    found: set[str] = set()
    missing: list[str] = []
    for name in names:
        if re.search(r"[*?[]", name):
            hits = [p for p in glob.glob(name) if os.path.isfile(p)]
            found.update(hits)
            if not hits:
                missing.append(name)
        elif os.path.isfile(name):
            found.add(name)
        else:
            missing.append(name)
    if missing:
        which = ("matches no file" if len(names) == 1
                 else f"{len(missing)} of {len(names)} shards not found (first: {missing[0]})")
        raise UserError(f"data.shards {pattern!r}: {which} under {os.getcwd()}; {_FIX}")
    unreadable = sorted(p for p in found if not os.access(p, os.R_OK))
    if unreadable:
        raise UserError(f"data.shards {pattern!r}: {len(unreadable)} shards are not readable (first: {unreadable[0]}); "
                        f"fix their permissions")
    return [Path(p) for p in sorted(found, key=_natural_key)]


def sample_captions(sample: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | str:
    """(en captions, zh captions) from a sample's .json / .en.txt / .zh.txt / .txt members, or the skip reason."""
    caps: dict[str, list[str]] = {"en": [], "zh": []}
    if "json" in sample:
        row = parse_json_object(sample["json"])
        if row is None:
            return BAD_JSON
        found = row_captions(row)
        if found == MISSING_FIELD:
            return MISSING_FIELD
        if not isinstance(found, str):
            caps["en"] += found[0]
            caps["zh"] += found[1]
    for ext, lang in (("en.txt", "en"), ("zh.txt", "zh"), ("txt", None)):
        if ext not in sample:
            continue
        try:
            text = sample[ext].decode("utf-8")
        except UnicodeDecodeError:
            return MISSING_FIELD
        for c in caption_list(text) or ():
            caps[lang or caption_lang(c)].append(c)
    en, zh = (tuple(dict.fromkeys(caps[lang])) for lang in ("en", "zh"))
    if not en and not zh:
        return NO_CAPTION
    return en, zh


INDEX_VERSION = 1
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def _members(path: Path, errors: list[Exception]) -> Iterator[dict]:
    """The shard's regular-file members as webdataset's `tar_file_iterator` yields them (same filters: metadata
    `__*__` names skipped), each with its data offset: {"fname", "data": (offset, bytes), "__url__"}. A member that
    cannot be read ends the shard (recorded in `errors`), as a truncated tar does in webdataset."""
    try:
        with path.open("rb") as f:
            magic = f.read(6)
    except OSError as exn:
        raise UserError(f"shard {str(path)!r} cannot be opened ({exn.strerror}); fix its permissions or data.shards"
                        ) from None
    if any(magic.startswith(m) for m in _COMPRESSED):
        raise UserError(f"shard {str(path)!r} is compressed; training reads samples in place, so shards must be plain "
                        ".tar files (decompress them, e.g. gunzip)")
    try:
        tar = tarfile.open(path, "r:")
    except tarfile.TarError as exn:
        errors.append(exn)
        return
    with tar:
        while True:
            try:
                info = tar.next()
                if info is None:
                    return
                if not info.isreg() or re.match(r"__[^/]*__($|/)", info.name):
                    continue
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError("unexpected end of data")
            except (tarfile.TarError, OSError, EOFError) as exn:
                errors.append(exn)
                return
            yield {"fname": info.name, "data": (info.offset_data, data), "__url__": str(path)}


def _index_shard(path: Path, image_size: int, captions: bool = True) -> dict:
    """One pass over a shard: each usable sample's key, image place (offset, size) and captions, and each skipped
    one with its reason. Images are decoded once here (and dropped) so a sample that cannot be decoded is skipped
    now, as the eager reader skipped it."""
    errors: list[Exception] = []

    def keep_going(exn: Exception) -> bool:
        errors.append(exn)
        return True

    samples, skipped = [], []
    for sample in group_by_keys(_members(path, errors), handler=keep_going):
        key = sample["__key__"]
        where = f"{path}:{key}"
        texts = {ext: v[1] for ext, v in sample.items() if isinstance(v, tuple)}
        found = sample_captions(texts)
        if not captions and found == NO_CAPTION:  # image-only data: a caption is neither needed nor used
            found = ((), ())
        if isinstance(found, str):
            skipped.append([where, found])
            continue
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            skipped.append([where, MISSING_IMAGE])
            continue
        offset, data = sample[ext]
        pixels = decode_image(io.BytesIO(data), image_size)
        if isinstance(pixels, str):
            skipped.append([where, pixels])
            continue
        samples.append([key, offset, len(data), list(found[0]), list(found[1])])
    duplicates = [e for e in errors if isinstance(e, ValueError) and "duplicate file name" in str(e)]
    for e in duplicates:
        skipped.append([f"{path}:{str(e.args[0]).split(':', 1)[0]}", DUPLICATE_MEMBER])
    damaged = None
    if len(errors) > len(duplicates):
        first = next(e for e in errors if e not in duplicates)
        damaged = str(first.args[0]).split(" @ ", 1)[0] if first.args else type(first).__name__
        skipped.append([str(path), CORRUPT_SHARD])
    return {"samples": samples, "skipped": skipped, "damaged": damaged}


def _index_file(path: Path, image_size: int, index_dir: Path | None, captions: bool = True) -> tuple[Path, dict]:
    st = path.stat()
    ident = {"version": INDEX_VERSION, "shard": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
             "image_size": image_size, **({} if captions else {"captions": False})}
    name = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24] + ".json"
    return (Path(index_dir) if index_dir is not None else cache_dir("shard-index")) / name, ident


def cached_index(path: Path, image_size: int, index_dir: Path | None = None, captions: bool = True) -> dict | None:
    """The shard's cached index when the shard is unchanged (same path, size and mtime), else None."""
    file, ident = _index_file(path, image_size, index_dir, captions)
    try:
        cached = read_json(file, "shard index", "")
    except UserError:  # missing or damaged: the shard is indexed again
        return None
    return cached if cached.get("ident") == ident else None


def build_index(path: Path, image_size: int, index_dir: Path | None = None, captions: bool = True) -> dict:
    """Index the shard and cache the result (temp file, then rename), without looking at the cache first."""
    return _build_and_cache(path, image_size, index_dir, captions)[0]


def _build_and_cache(path: Path, image_size: int, index_dir: Path, captions: bool) -> tuple[dict, bool]:
    """(the shard's index, whether it was cached)."""
    file, ident = _index_file(path, image_size, index_dir, captions)
    index = {"ident": ident, **_index_shard(path, image_size, captions)}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            tmp.write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    except OSError as exn:  # a read-only or full cache folder costs a rebuild next time, not this run
        log.warning("shard index %s not cached (%s)", file, exn.strerror or exn)
        return index, False
    return index, True


PARALLEL_FROM = 4  # shards to index before a pool of processes pays for its start (about a second each)


def _index_processes(todo: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, todo)) if todo >= PARALLEL_FROM else 1


def _build_uncached(path: Path, image_size: int, index_dir: Path, captions: bool) -> dict | None:
    """Build the shard's index into the cache; the index itself only when it could not be cached."""
    index, cached = _build_and_cache(path, image_size, index_dir, captions)
    return None if cached else index


def shard_indexes(paths: list[Path], image_size: int, index_dir: Path | None = None, captions: bool = True) -> Iterator[dict]:
    """Each shard's index, in order, read from the cache one at a time (a corpus's whole index never sits in memory:
    freed memory stays in the process, and forked DataLoader workers inherit it). Shards not cached yet are indexed
    first by a pool of processes, one per core (a sample costs about 1 ms to index, image decode included: 300k pairs
    took 5 minutes on one core). Spawned, not forked: the training process may already run torch's threads."""
    import concurrent.futures
    import functools
    import multiprocessing

    # the cache file's name hashes the shard's path, size and mtime: no file, not cached (its ident is checked on read)
    todo = [i for i, p in enumerate(paths) if not _index_file(p, image_size, index_dir, captions)[0].is_file()]
    procs = _index_processes(len(todo))
    built: dict[int, dict] = {}  # the indexes a read-only or full cache folder could not keep
    if procs > 1:
        from compress.progress import progress_bar

        build = functools.partial(_build_uncached, image_size=image_size, index_dir=index_dir, captions=captions)
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool, \
                progress_bar(f"index shards ({procs} processes)", len(todo)) as advance:
            for i, index in zip(todo, pool.map(build, [paths[i] for i in todo])):
                if index is not None:
                    built[i] = index
                advance(paths[i].name)
    for i, p in enumerate(progress_paths(paths) if procs == 1 else paths):
        index = built.pop(i, None) or cached_index(p, image_size, index_dir, captions)
        yield index if index is not None else build_index(p, image_size, index_dir, captions)


def load_shards(pattern: str, image_size: int = 64, index_dir: str | os.PathLike | None = None,
                captions: bool = True) -> ManifestData:
    """The samples of the shards `pattern` names, their images left on disk (`LazyImages`: read and decoded when a
    batch asks for them); damaged samples skipped and counted (see the module docstring). Each shard is indexed
    once (one pass over it) and the index cached under `index_dir`, keyed by the shard's path, size and mtime.
    `captions=False`: image-only data (distill.unpaired_images), where a sample without a caption is kept."""
    paths = expand_shards(pattern)
    rows = RowCollector()
    # flat from the start (compress/data/texts.py): nothing per sample outlives a shard's index
    source, offset, size, keys = array("i"), array("q"), array("q"), TextColumnBuilder()
    for s, (path, index) in enumerate(zip(paths, shard_indexes(paths, image_size, index_dir, captions))):
        for key, off, n, en, zh in index["samples"]:
            source.append(s)
            offset.append(off)
            size.append(n)
            keys.append(key)
            rows.en.append(en)
            rows.zh.append(zh)
        for where, reason in index["skipped"]:
            rows.skip(where, reason)
        if index["damaged"]:
            log.warning("shard %s is damaged after %d usable samples (%s); the rest of it is skipped", path,
                        len(index["samples"]), index["damaged"])
    rows.images = keys  # finish() counts usable rows by `images`
    fix = ("each sample needs <key>.jpg (or .png, .webp) and <key>.json {\"en\": text, \"zh\": text} "
           "(at least one language)")
    _, en, zh, skipped = rows.finish(f"data.shards {pattern!r}", "samples", "the shards hold no samples", fix, str,
                                     warn_source=f"shards {pattern}", none_usable=f"samples in {len(paths)} shards",
                                     stack=False)
    images = LazyImages([str(p) for p in paths], np.frombuffer(source, np.int32), np.frombuffer(offset, np.int64),
                        np.frombuffer(size, np.int64), image_size, keys.finish())
    return ManifestData(images=images, en=en, zh=zh, skipped=skipped, used=len(images),
                        skipped_samples=rows.where)


def progress_paths(paths: list[Path]) -> Iterator[Path]:
    """The shards, with a progress bar when there are many to index."""
    if len(paths) < 8:
        yield from paths
        return
    from compress.progress import progress_bar

    with progress_bar("index shards", len(paths)) as advance:
        for p in paths:
            yield p
            advance(p.name)


@dataclass
class ShardsWritten:
    paths: list[Path]
    pattern: str  # brace pattern naming exactly these shards: the recipe's data.shards
    samples: int
    skipped: dict[str, int]


def _shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def _image_ext(path: Path) -> str | None:
    ext = path.suffix.lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    return ext if ext in IMAGE_EXTS else None


def _valid_rows(rows: Iterable[object], root: Path, skipped: dict[str, int]) -> Iterator[tuple[Path, str, dict]]:
    """(image file, tar extension, caption JSON) for each row the manifest loader could use, others counted."""
    for row in rows:
        reason = BAD_JSON
        if isinstance(row, dict):
            image = row.get("image")
            captions = row_captions(row)
            if not isinstance(image, str) or not image.strip():
                reason = MISSING_FIELD
            elif isinstance(captions, str):
                reason = captions
            elif (target := _safe_path(root, image)) is None:
                reason = UNSAFE_PATH
            elif not target.is_file():
                reason = MISSING_IMAGE
            elif (ext := _image_ext(target)) is None:
                reason = UNSUPPORTED_IMAGE
            else:
                meta = {lang: (c[0] if len(c) == 1 else list(c)) for lang, c in zip(("en", "zh"), captions) if c}
                yield target, ext, meta
                continue
        skipped[reason] = skipped.get(reason, 0) + 1


def write_shards(
    rows: Iterable[object], out_dir: str | os.PathLike, samples_per_shard: int = 1000, *,
    root: str | os.PathLike | None = None, prefix: str = "train", overwrite: bool = False,
) -> ShardsWritten:
    """Write manifest rows ({"image": path relative to `root` (default: the working directory), "en": ..., "zh": ...})
    as `<out_dir>/<prefix>-000000.tar`, ... with `samples_per_shard` samples each.

    Rows the manifest loader would skip before opening the image (bad JSON: pass None, missing fields, no caption,
    unsafe or missing path) are skipped and counted; image bytes are copied as they are, so an undecodable image is
    written and then skipped (and counted) at load time, as `load_manifest` would. Each shard is written to a temp
    file and renamed, and member timestamps are fixed, so the same rows give byte-identical shards. A folder that
    already holds `<prefix>-NNNNNN.tar` shards is refused unless `overwrite`; then shards past the new last one are
    removed once the new ones are complete."""
    if samples_per_shard < 1:
        raise UserError(f"samples per shard must be at least 1 (got {samples_per_shard})")
    out = Path(out_dir)
    root_dir = Path(root if root is not None else os.getcwd()).resolve()
    shard_re = re.compile(rf"{re.escape(prefix)}-\d{{6}}\.tar")
    old = sorted(p for p in out.glob(f"{glob.escape(prefix)}-*.tar") if shard_re.fullmatch(p.name)) if out.is_dir() \
        else []
    if old and not overwrite:
        raise UserError(f"{out} already holds {len(old)} {prefix}-*.tar shards; write to an empty folder, or pass "
                        f"overwrite=True to replace them")

    skipped: dict[str, int] = {}
    paths: list[Path] = []
    samples = 0
    valid = _valid_rows(rows, root_dir, skipped)
    while chunk := list(itertools.islice(valid, samples_per_shard)):
        path = out / _shard_name(prefix, len(paths))
        with atomic_path(path) as tmp, tmp.open("wb") as f, TarWriter(f, encoder=False, mtime=0) as writer:
            for target, ext, meta in chunk:
                data = read_bytes(target, "image", "restore it or drop its row, then convert again")
                writer.write({"__key__": f"{samples:09d}", ext: data,
                              "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")})
                samples += 1
        paths.append(path)

    if not paths:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "no rows"
        raise UserError(f"no usable rows to write ({reasons}); each row needs an existing image and a caption")
    for stale in old[len(paths):]:
        stale.unlink()
    if skipped:
        log.warning("shards %s: wrote %d samples, skipped %s", out, samples, skipped)
    last = len(paths) - 1
    pattern = str(out / (_shard_name(prefix, 0) if last == 0 else f"{prefix}-{{000000..{last:06d}}}.tar"))
    return ShardsWritten(paths, pattern, samples, skipped)


def manifest_to_shards(
    manifest: str | os.PathLike, out_dir: str | os.PathLike, samples_per_shard: int = 1000, *,
    root: str | os.PathLike | None = None, prefix: str = "train", overwrite: bool = False,
) -> ShardsWritten:
    """`write_shards` for a JSONL manifest file (image paths relative to `root`, default the manifest's folder)."""
    path = Path(manifest)
    if not path.is_file():
        raise UserError(
            f"manifest {path} not found: pass a JSONL file with one {{\"image\", \"en\", \"zh\"}} row per line"
        )

    def rows() -> Iterator[object]:
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield parse_json_object(line)

    return write_shards(rows(), out_dir, samples_per_shard, root=root if root is not None else path.parent,
                        prefix=prefix, overwrite=overwrite)
