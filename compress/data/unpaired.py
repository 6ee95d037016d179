"""Unpaired stage-1 data from files (`distill.unpaired_images`, `distill.text_only`; see PairSet and
compress/data/pairs.py stage1_pairs): images with no caption, and text with no image.

- Images: a JSONL manifest of {"image": path} rows, paths relative to the manifest's folder and never leaving it
  (the rules of compress/data/manifest.py; any captions a row has are ignored), or webdataset shards (a brace
  pattern or glob, as data.shards; a sample needs only its image). Either way the images stay on disk.
- Text: a JSONL of {"en": ..., "zh": ...} rows (a caption or a list of them, one language is enough), or a plain text
  file of one caption (or label) per line, its language told by `compress.prompts.caption_lang`.
"""
from __future__ import annotations

import os
from pathlib import Path

from compress.data.manifest import (MISSING_FIELD, NO_CAPTION, UNSAFE_PATH, RowCollector, _load_image, _safe_path,
                                    lazy_files, parse_json_object, row_captions)
from compress.data.pairs import PairSet, image_only_pairs, text_only_pairs
from compress.data.texts import CaptionColumnBuilder, TextColumn
from compress.errors import UserError
from compress.prompts import caption_lang


def load_image_only(path: str | os.PathLike, image_size: int) -> PairSet:
    """Images of an image-only JSONL manifest, one group per row; bad rows are skipped and counted."""
    if str(path).endswith(".tar") or any(ch in str(path) for ch in "{*?"):  # webdataset shards, captions optional
        from compress.data.webdataset import load_shards

        return image_only_pairs(load_shards(str(path), image_size, captions=False).images)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"distill.unpaired_images: {path} not found: give a JSONL file of {{\"image\": path}} rows")
    root = path.parent.resolve()
    rows = RowCollector()
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = parse_json_object(line)
            image = None if row is None else row.get("image")
            if not isinstance(image, str) or not image.strip():
                rows.skip(lineno, MISSING_FIELD)
                continue
            target = _safe_path(root, image)
            pixels = UNSAFE_PATH if target is None else _load_image(target, image_size)  # a check, then dropped
            if isinstance(pixels, str):
                rows.skip(lineno, pixels)
                continue
            rows.add(str(target), (), ())
    rows.finish(f"distill.unpaired_images {path}", "rows", "file has no rows",
                f"each line must be {{\"image\": path relative to {root}}} with a readable image", lambda n: f"line {n}",
                stack=False)
    return image_only_pairs(lazy_files(TextColumn.of(rows.images), image_size))


def load_text_only(path: str | os.PathLike, templated: bool, image_shape: tuple[int, int, int]) -> PairSet:
    """Captions of a text-only file, one group per row. `templated`: the pairs' (a label gets a caption template)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"distill.text_only: {path} not found: give a JSONL of {{\"en\", \"zh\"}} rows or a .txt "
                        "of one caption per line")
    en, zh = CaptionColumnBuilder(), CaptionColumnBuilder()  # flat: a text corpus can hold millions of lines
    skipped: dict[str, int] = {}
    jsonl = path.suffix in (".jsonl", ".json")
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            if jsonl:
                row = parse_json_object(line)
                caps = MISSING_FIELD if row is None else row_captions(row)
                if isinstance(caps, str):
                    skipped[caps] = skipped.get(caps, 0) + 1
                    continue
                en.append(caps[0])
                zh.append(caps[1])
            else:
                text = line.decode("utf-8", errors="replace").strip()
                lang = caption_lang(text)
                en.append((text,) if lang == "en" else ())
                zh.append((text,) if lang == "zh" else ())
    if not len(en):
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or NO_CAPTION
        raise UserError(f"distill.text_only {path}: no usable caption ({reasons}); give {{\"en\": text, \"zh\": text}} "
                        "rows (.jsonl) or one caption per line (.txt)")
    return text_only_pairs(en.finish(), zh.finish(), templated, image_shape)
