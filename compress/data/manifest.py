"""Load a user's own bilingual image/text pairs from a JSONL manifest.

One row per line: {"image": "relative/path.jpg", "en": "a red apple", "zh": "红苹果"}. A caption may also be a list
of captions (`"en": ["a red apple", "an apple on a table"]`: training picks one at random each time the image is
drawn), and a row may have only one language (`"en"` or `"zh"` absent, null, "" or []): it is used for the
language it has and `PairSet.en` / `PairSet.zh` hold None for the other. Paths are relative to `root` (default:
the manifest's folder) and may never leave it: absolute paths, `..` and symlinks that resolve outside are refused,
so a manifest from elsewhere cannot make training read arbitrary files. Bad rows are skipped and counted by reason
(with line numbers) instead of aborting a long job; only a manifest with no usable row at all is an error.

`compress.data.webdataset` reads the same rows from tar shards and shares the caption and image rules below.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Sequence

import numpy as np
import torch

from compress.data.images import decode_image
from compress.data.pairs import PairSet
from compress.data.store import ImageSource, LazyImages
from compress.data.texts import CaptionColumnBuilder, TextColumn
from compress.errors import UserError

log = logging.getLogger(__name__)


# Skip reasons, in the order they are checked.
BAD_JSON = "bad_json"  # not valid UTF-8 JSON, or not a JSON object
MISSING_FIELD = "missing_field"  # "image" absent or not a string, or a caption that is not a string / list of strings
NO_CAPTION = "no_caption"  # no non-empty caption in either language
UNSAFE_PATH = "unsafe_path"  # absolute, contains "..", or resolves outside root
MISSING_IMAGE = "missing_image"  # no such file
# CORRUPT_IMAGE (compress/data/images.py): exists but Pillow cannot decode it


@dataclass
class ManifestData:
    """Rows loaded from a manifest (or from tar shards, see compress.data.webdataset), one image per row."""

    images: "ImageSource"  # uint8 (N, 3, image_size, image_size), letterboxed; on disk (LazyImages) for corpora
    # every caption of each row, in file order; () where the row has no English caption (a CaptionColumn: flat, see
    # compress/data/texts.py)
    en: Sequence[tuple[str, ...]]
    zh: Sequence[tuple[str, ...]]
    skipped: dict[str, int]  # reason -> count
    used: int
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, reason)
    skipped_samples: list[tuple[str, str]] = field(default_factory=list)  # shards: ("shard.tar:key", reason)

    def __len__(self) -> int:
        return self.used

    def pairs(self) -> PairSet:
        """One group per row; None where a row lacks a language (training masks those, see PairSet)."""
        return PairSet.from_captions(self.images, self.en, self.zh)


@dataclass
class RowCollector:
    """What both loaders (JSONL manifest, tar shards) accumulate: usable rows, and skipped ones counted by reason
    with where each was (a line number or a shard member)."""

    images: list = field(default_factory=list)  # pixels (np.ndarray) or, for a lazy source, the image files
    # every caption of each row, appended flat (no per-row objects: compress/data/texts.py)
    en: CaptionColumnBuilder = field(default_factory=CaptionColumnBuilder)
    zh: CaptionColumnBuilder = field(default_factory=CaptionColumnBuilder)
    skipped: dict[str, int] = field(default_factory=dict)
    where: list[tuple] = field(default_factory=list)  # (location, reason) per skipped row

    def add(self, pixels: np.ndarray | str, en: Sequence[str], zh: Sequence[str]) -> None:
        self.images.append(pixels)
        self.en.append(en)
        self.zh.append(zh)

    def skip(self, where: object, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.where.append((where, reason))

    def finish(self, source: str, unit: str, empty: str, fix: str, show: Callable[[object], str],
               warn_source: str | None = None, none_usable: str | None = None, stack: bool = True) -> tuple:
        """(images tensor, en, zh (CaptionColumns), skipped) after the one-line error for no usable rows and the skip
        warning;
        `stack=False`: `images` holds no pixels (files of a lazy source), and None comes back in their place."""
        if not len(self.images):
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or empty
            raise UserError(f"{source}: no usable {none_usable or unit} ({reasons}); {fix}")
        if self.skipped:
            first = ", ".join(f"{show(w)}: {r}" for w, r in self.where[:5])
            log.warning("%s: used %d %s, skipped %s (%s%s)", warn_source or source, len(self.images), unit,
                        self.skipped, first, ", ..." if len(self.where) > 5 else "")
        return ((torch.from_numpy(np.stack(self.images)) if stack else None), self.en.finish(), self.zh.finish(),
                self.skipped)


def caption_list(value: object) -> tuple[str, ...] | None:
    """Captions from a JSON value: a string or a list of strings -> the non-empty ones, stripped; absent (None) -> ();
    any other type -> None (a malformed row)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(v.strip() for v in value if v.strip())


def _safe_path(root: Path, rel: str) -> Path | None:
    """`root / rel` if it stays inside root after resolving symlinks, else None."""
    win = PureWindowsPath(rel)
    if "\x00" in rel or PurePosixPath(rel).is_absolute() or win.is_absolute() or win.drive:
        return None
    if ".." in win.parts:  # Windows parsing splits on both / and \
        return None
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):  # e.g. a symlink loop
        return None
    return target if target.is_relative_to(root) else None


def parse_json_object(data: bytes) -> dict | None:
    """A UTF-8 JSON object, or None for anything else."""
    try:
        row = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


def row_captions(row: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | str:
    """(en captions, zh captions) of a row, or the skip reason (a malformed caption, or none in either language)."""
    en, zh = caption_list(row.get("en")), caption_list(row.get("zh"))
    if en is None or zh is None:
        return MISSING_FIELD
    if not en and not zh:
        return NO_CAPTION
    return en, zh


def _row_fields(line: bytes) -> tuple[str, tuple[str, ...], tuple[str, ...]] | str:
    """(image, en captions, zh captions) or the skip reason."""
    row = parse_json_object(line)
    if row is None:
        return BAD_JSON
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        return MISSING_FIELD
    captions = row_captions(row)
    if isinstance(captions, str):
        return captions
    return image, *captions


def _load_image(path: Path, image_size: int) -> np.ndarray | str:
    if not path.is_file():
        return MISSING_IMAGE
    return decode_image(path, image_size)


def load_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None, image_size: int = 64) -> ManifestData:
    """Read a JSONL manifest into letterboxed uint8 images and their en/zh captions; skip and count bad rows.

    `.pairs()` of the result is the training PairSet (one group per row)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"manifest {path} not found: pass a JSONL file with one {{\"image\", \"en\", \"zh\"}} row per line"
        )
    root_dir = (Path(root) if root is not None else path.parent).resolve()

    rows = RowCollector()
    skip = rows.skip

    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = _row_fields(line)
            if isinstance(fields, str):
                skip(lineno, fields)
                continue
            rel, text_en, text_zh = fields
            target = _safe_path(root_dir, rel)
            if target is None:
                skip(lineno, UNSAFE_PATH)
                continue
            pixels = _load_image(target, image_size)  # decoded once to skip what cannot be, then dropped
            if isinstance(pixels, str):
                skip(lineno, pixels)
                continue
            rows.add(str(target), text_en, text_zh)

    fix = (f"each line must be {{\"image\": path relative to {root_dir}, \"en\": text, \"zh\": text}} "
           f"(at least one language) with a readable image")
    _, en, zh, skipped = rows.finish(f"manifest {path}", "rows", "file has no rows", fix, lambda n: f"line {n}",
                                     stack=False)
    images = lazy_files(TextColumn.of(rows.images), image_size)
    return ManifestData(images=images, en=en, zh=zh, skipped=skipped, used=len(images), skipped_lines=rows.where)


def lazy_files(files: Sequence[str], image_size: int) -> LazyImages:
    """One image file per row, read whole and decoded when a batch asks for it."""
    n = len(files)
    return LazyImages(files, np.arange(n), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), image_size)
