"""WebDataset tar shards, the usual layout of real image-text corpora, read into the same data as a JSONL manifest.

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

The tar reading is webdataset's (`tar_file_expander` + `group_by_keys`, the layout's reference implementation);
shard files are opened here, not through webdataset's URL opener, so a pattern can never run a `pipe:` command.
`write_shards` / `manifest_to_shards` turn manifest rows into shards (image bytes copied, not re-encoded).
"""
from __future__ import annotations

import glob
import io
import itertools
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from braceexpand import UnbalancedBracesError, braceexpand
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.writer import TarWriter

from compress.atomic import atomic_path
from compress.data.manifest import (
    BAD_JSON, MISSING_FIELD, MISSING_IMAGE, NO_CAPTION, UNSAFE_PATH, ManifestData, RowCollector, _safe_path,
    caption_list, decode_image, parse_json_object, row_captions,
)
from compress.errors import UserError
from compress.prompts import caption_lang

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


def _sample_pixels(sample: dict, image_size: int) -> np.ndarray | str:
    data = next((sample[ext] for ext in IMAGE_EXTS if ext in sample), None)
    if data is None:
        return MISSING_IMAGE
    return decode_image(io.BytesIO(data), image_size)


def _shard_samples(path: Path, errors: list[Exception]) -> Iterator[dict]:
    def keep_going(exn: Exception) -> bool:
        errors.append(exn)
        return True

    # Opened here rather than by webdataset's url_opener (gopen), which would also run "pipe:..." names as commands.
    try:
        stream = path.open("rb")
    except OSError as exn:
        raise UserError(f"shard {str(path)!r} cannot be opened ({exn.strerror}); fix its permissions or data.shards"
                        ) from None
    with stream:
        members = tar_file_expander([{"url": str(path), "stream": stream}], handler=keep_going)
        yield from group_by_keys(members, handler=keep_going)


def load_shards(pattern: str, image_size: int = 64) -> ManifestData:
    """Read every sample of the shards `pattern` names; skip and count damaged ones (see the module docstring)."""
    paths = expand_shards(pattern)
    rows = RowCollector()
    skip = rows.skip

    for path in paths:
        errors: list[Exception] = []
        before = len(rows.images)
        for sample in _shard_samples(path, errors):
            where = f"{path}:{sample['__key__']}"
            captions = sample_captions(sample)
            if isinstance(captions, str):
                skip(where, captions)
                continue
            pixels = _sample_pixels(sample, image_size)
            if isinstance(pixels, str):
                skip(where, pixels)
                continue
            rows.add(pixels, captions[0], captions[1])
        duplicates = [e for e in errors if isinstance(e, ValueError) and "duplicate file name" in str(e)]
        for e in duplicates:
            skip(f"{path}:{str(e.args[0]).split(':', 1)[0]}", DUPLICATE_MEMBER)
        if len(errors) > len(duplicates):  # one count per shard: a truncated tar raises once per member read after it
            first = next(e for e in errors if e not in duplicates)
            why = str(first.args[0]).split(" @ ", 1)[0] if first.args else type(first).__name__
            skip(str(path), CORRUPT_SHARD)
            log.warning("shard %s is damaged after %d usable samples (%s); the rest of it is skipped", path,
                        len(rows.images) - before, why)

    fix = ("each sample needs <key>.jpg (or .png, .webp) and <key>.json {\"en\": text, \"zh\": text} "
           "(at least one language)")
    images, en, zh, skipped = rows.finish(f"data.shards {pattern!r}", "samples", "the shards hold no samples", fix, str,
                                          warn_source=f"shards {pattern}", none_usable=f"samples in {len(paths)} shards")
    return ManifestData(images=images, en=en, zh=zh, skipped=skipped, used=len(images), skipped_samples=rows.where)


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
                writer.write({"__key__": f"{samples:09d}", ext: target.read_bytes(),
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
