"""Load a user's own bilingual image/text pairs from a JSONL manifest.

One row per line: {"image": "relative/path.jpg", "en": "a red apple", "zh": "红苹果"}. Paths are relative to
`root` (default: the manifest's folder) and may never leave it: absolute paths, `..` and symlinks that resolve
outside are refused, so a manifest from elsewhere cannot make training read arbitrary files. Bad rows are
skipped and counted by reason (with line numbers) instead of aborting a long job; only a manifest with no usable
row at all is an error.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image, ImageOps

from compress.errors import UserError

log = logging.getLogger(__name__)

# Letterbox padding: neutral grey, so padding reads as "no content" rather than as a white or black object.
PAD_RGB = (128, 128, 128)

# Skip reasons, in the order they are checked.
BAD_JSON = "bad_json"  # not valid UTF-8 JSON, or not a JSON object
MISSING_FIELD = "missing_field"  # "image", "en" or "zh" absent, not a string, or empty
UNSAFE_PATH = "unsafe_path"  # absolute, contains "..", or resolves outside root
MISSING_IMAGE = "missing_image"  # no such file
CORRUPT_IMAGE = "corrupt_image"  # exists but Pillow cannot decode it


@dataclass
class ManifestData:
    images: torch.Tensor  # uint8 (N, 3, image_size, image_size), letterboxed
    en: list[str]
    zh: list[str]
    skipped: dict[str, int]  # reason -> count
    used: int
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, reason)

    def __len__(self) -> int:
        return self.used


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Fit the whole image into size x size keeping its aspect ratio (no crop: a caption may name an edge object)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    else:
        img = img.convert("RGB")
    w, h = img.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), PAD_RGB)
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas).transpose(2, 0, 1)


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


def _row_fields(line: bytes) -> tuple[str, str, str] | str:
    """(image, en, zh) or the skip reason."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return BAD_JSON
    if not isinstance(row, dict):
        return BAD_JSON
    values = [row.get(k) for k in ("image", "en", "zh")]
    if not all(isinstance(v, str) and v.strip() for v in values):
        return MISSING_FIELD
    image, en, zh = values
    return image, en.strip(), zh.strip()


def _load_image(path: Path, image_size: int) -> np.ndarray | str:
    if not path.is_file():
        return MISSING_IMAGE
    try:
        with Image.open(path) as img:
            img.draft("RGB", (image_size * 2, image_size * 2))  # JPEG: decode at reduced size, much faster
            img.load()
            return letterbox(img, image_size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return CORRUPT_IMAGE


def load_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None, image_size: int = 64) -> ManifestData:
    """Read a JSONL manifest into letterboxed uint8 images and their en/zh captions; skip and count bad rows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"manifest {path} not found: pass a JSONL file with one {{\"image\", \"en\", \"zh\"}} row per line"
        )
    root_dir = (Path(root) if root is not None else path.parent).resolve()

    images: list[np.ndarray] = []
    en: list[str] = []
    zh: list[str] = []
    skipped: dict[str, int] = {}
    skipped_lines: list[tuple[int, str]] = []

    def skip(lineno: int, reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        skipped_lines.append((lineno, reason))

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
            pixels = _load_image(target, image_size)
            if isinstance(pixels, str):
                skip(lineno, pixels)
                continue
            images.append(pixels)
            en.append(text_en)
            zh.append(text_zh)

    if not images:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "file has no rows"
        raise UserError(
            f"manifest {path}: no usable rows ({reasons}); each line must be "
            f"{{\"image\": path relative to {root_dir}, \"en\": text, \"zh\": text}} with a readable image"
        )
    if skipped:
        first = ", ".join(f"line {n}: {r}" for n, r in skipped_lines[:5])
        log.warning("manifest %s: used %d rows, skipped %s (%s%s)", path, len(images), skipped, first,
                    ", ..." if len(skipped_lines) > 5 else "")
    return ManifestData(
        images=torch.from_numpy(np.stack(images)),
        en=en,
        zh=zh,
        skipped=skipped,
        used=len(images),
        skipped_lines=skipped_lines,
    )
