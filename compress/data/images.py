"""Decoding one image file the way every loader does: upright RGB, transparency on white, letterboxed to a square.

The lowest data module: manifests, shards and images left on disk (compress/data/store.py) all decode through it,
so the same file gives the same pixels whichever way it is read.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from compress.errors import UserError
from compress.readers import open_image

# Letterbox padding: neutral grey, so padding reads as "no content" rather than as a white or black object.
PAD_RGB = (128, 128, 128)
CORRUPT_IMAGE = "corrupt_image"  # exists but Pillow cannot decode it


def rgb(img: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, transparency flattened onto white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Fit the whole image into size x size keeping its aspect ratio (no crop: a caption may name an edge object)."""
    img = rgb(img)
    w, h = img.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), PAD_RGB)
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas).transpose(2, 0, 1)


def decode_image(source: Path | IO[bytes], image_size: int) -> np.ndarray | str:
    """Letterboxed uint8 (3, S, S) from a file or a byte stream, or CORRUPT_IMAGE."""
    try:  # JPEG: decode at reduced size, much faster
        return letterbox(open_image(source, draft=image_size * 2), image_size)
    except (UserError, OSError, ValueError):  # missing, unreadable, not an image, a bomb: skipped and counted
        return CORRUPT_IMAGE
