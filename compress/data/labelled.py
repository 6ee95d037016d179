"""Labelled image sets for evaluation, read from local folders in one of three documented layouts.

Under `<data_root>/<dataset>/`, the first layout found wins:

1. `test.jsonl`: one row per image, ``{"image": "relative/path.jpg", "label": 3}`` or, for multi-label sets such as
   VOC2007, ``{"image": "...", "labels": [4, 11]}``. Paths are relative to the file's folder and may not leave it.
2. `test/<class>/<image>`: ImageFolder, where `<class>` is the class index (``0``, ``007``) or the exact English
   class name from the class list.
3. the torchvision layout: `torchvision.datasets.<Class>(root=<data_root>/<dataset>, download=False, **kwargs)`.

Images are decoded lazily, batch by batch, and preprocessed the CLIP way: shorter side resized to the model's input
size (bicubic), then centre-cropped to a square. Pixels stay uint8 until the model's own encoder takes them.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from compress.data.manifest import _safe_path
from compress.errors import UserError
from compress.readers import check_image_header, open_image as _open_image, read_jsonl as _read_jsonl

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def clip_preprocess(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side -> size (bicubic), centre crop size x size, RGB uint8 CHW (CLIP / ELEVATER eval transform)."""
    img = ImageOps.exif_transpose(img).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img).transpose(2, 0, 1)


def preprocessed_batches(load: Callable[[int], Image.Image], n: int, size: int, batch_size: int, workers: int = 4):
    """Yield images 0..n-1 as uint8 (B, 3, size, size) tensors, in order. Decoding and resizing run in a thread pool
    (Pillow releases the GIL there), so JPEG decoding does not serialise behind the model."""
    prep = lambda i: clip_preprocess(load(i), size)  # noqa: E731
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, batch_size):
            yield torch.from_numpy(np.stack(list(pool.map(prep, range(start, min(start + batch_size, n))))))


def read_jsonl(path: Path, expected: str) -> Iterator[tuple[str, object]]:
    """("file:line", parsed row) for each non-blank line; a file that is not UTF-8 or a line that is not JSON is a
    one-line error naming it."""
    for lineno, row in _read_jsonl(path, "evaluation file", f"each line must be {expected}"):
        yield f"{path}:{lineno}", row


@dataclass
class LabelledImages:
    """N images (opened on demand) with single labels (N,) or multi-hot labels (N, C)."""

    load: Callable[[int], Image.Image]
    labels: torch.Tensor
    layout: str
    multilabel: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, size: int, batch_size: int):
        return preprocessed_batches(self.load, len(self), size, batch_size)


EVAL_IMAGE_FIX = "replace the file, or remove its row from the data set"


def open_image(path: "Path | BinaryIO", name: str | None = None) -> Image.Image:
    """An evaluation image, or one line naming it: a benchmark with an image left out would not be the benchmark."""
    return _open_image(path, "evaluation image", EVAL_IMAGE_FIX, name=name)


def check_headers(paths: Sequence[Path]) -> None:
    """Every image's header read (not decoded) before any model is loaded: a missing or foreign file, or a bomb, is
    one line up front rather than after the first datasets scored (about 0.1 ms an image)."""
    for p in paths:
        check_image_header(p, "evaluation image", EVAL_IMAGE_FIX)


def from_jsonl(path: Path, num_classes: int, multilabel: bool) -> LabelledImages:
    root = path.parent.resolve()
    paths: list[Path] = []
    labels: list[list[int]] = []
    for where, row in read_jsonl(path, '{"image": ..., "label": N}'):
        rel = row.get("image") if isinstance(row, dict) else None
        raw = (row.get("labels", row.get("label")) if isinstance(row, dict) else None)
        ids = raw if isinstance(raw, list) else [raw]
        if not isinstance(rel, str) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise UserError(f"{where}: needs \"image\" (a path) and \"label\" (an int) or \"labels\" (a list of ints)")
        bad = [i for i in ids if not 0 <= i < num_classes]
        if bad:
            raise UserError(f"{where}: label {bad[0]} is outside 0..{num_classes - 1}; labels index the class list")
        if len(ids) > 1 and not multilabel:
            raise UserError(f"{where}: {len(ids)} labels on a single-label dataset; give one \"label\"")
        target = _safe_path(root, rel)
        if target is None:
            raise UserError(f"{where}: image path {rel!r} leaves {str(root)!r}; use a path relative to the file's folder")
        paths.append(target)
        labels.append(ids)
    if not paths:
        raise UserError(f"{path}: no rows; each line must be {{\"image\": ..., \"label\": N}}")
    check_headers(paths)
    return LabelledImages(lambda i: open_image(paths[i]), _label_tensor(labels, num_classes, multilabel), "jsonl",
                          multilabel)


def _class_index(folder: str, classes: Sequence[str]) -> int | None:
    if re.fullmatch(r"\d+", folder):
        i = int(folder)
        return i if i < len(classes) else None
    try:
        return list(classes).index(folder)
    except ValueError:
        return None


def from_image_folder(root: Path, classes: Sequence[str], multilabel: bool) -> LabelledImages:
    paths: list[Path] = []
    labels: list[list[int]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        idx = _class_index(sub.name, classes)
        if idx is None:
            raise UserError(f"{sub}: folder name is neither a class index 0..{len(classes) - 1} nor a class name of "
                            f"this dataset; rename it to its class index")
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += files
        labels += [[idx]] * len(files)
    if not paths:
        raise UserError(f"{root}: no images in its class folders ({', '.join(sorted(IMAGE_SUFFIXES))})")
    check_headers(paths)
    return LabelledImages(lambda i: open_image(paths[i]), _label_tensor(labels, len(classes), multilabel),
                          "image_folder", multilabel)


def _norm(name: str) -> str:
    return " ".join(re.sub(r"[_/\-]+", " ", name.lower()).split())


def torchvision_label_map(tv_classes: Sequence[str] | None, classes: Sequence[str], label_map: Sequence[int] | None,
                          same_order: bool) -> list[int] | None:
    """torchvision label -> class-list index. By name when every torchvision class name matches one class name
    (after folding case, `_`, `/` and `-`); else the map shipped in datasets.json; else identity when the order is
    known to be the same. None when none of these holds (the dataset is then skipped, never mis-scored)."""
    if tv_classes is not None:
        index = {_norm(c): i for i, c in enumerate(classes)}
        by_name = [index.get(_norm(c)) for c in tv_classes]
        if all(i is not None for i in by_name) and len(set(by_name)) == len(by_name):
            return by_name
    if label_map is not None:
        return list(label_map)
    if same_order and (tv_classes is None or len(tv_classes) == len(classes)):
        return list(range(len(classes)))
    return None


def from_torchvision(root: Path, cls_name: str, kwargs: dict, classes: Sequence[str],
                     label_map: Sequence[int] | None = None, same_order: bool = True) -> LabelledImages:
    import torchvision.datasets as tvd

    ds = getattr(tvd, cls_name)(root=str(root), download=False, **kwargs)
    mapping = torchvision_label_map(getattr(ds, "classes", None), classes, label_map, same_order)
    if mapping is None:
        raise RuntimeError(f"torchvision {cls_name}'s labels cannot be matched to the class list by name or order")
    targets = [mapping[t] for t in _torchvision_targets(ds)]

    def load(i: int) -> Image.Image:
        img = ds[i][0]
        return img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))

    return LabelledImages(load, torch.tensor(targets, dtype=torch.long), f"torchvision.{cls_name}")


def _torchvision_targets(ds) -> list[int]:
    """Labels without decoding every image, from the attribute each torchvision dataset keeps them in."""
    for attr in ("targets", "_labels", "labels", "y"):
        v = getattr(ds, attr, None)
        if v is not None and len(v) == len(ds):
            return [int(t) for t in v]
    samples = getattr(ds, "_samples", None) or getattr(ds, "samples", None)
    if samples is not None:
        return [int(s[1]) for s in samples]
    return [int(ds[i][1]) for i in range(len(ds))]


def _label_tensor(labels: list[list[int]], num_classes: int, multilabel: bool) -> torch.Tensor:
    if not multilabel:
        return torch.tensor([l[0] for l in labels], dtype=torch.long)
    hot = torch.zeros(len(labels), num_classes, dtype=torch.bool)
    for i, ids in enumerate(labels):
        hot[i, ids] = True
    return hot


def find_labelled_images(folder: Path, classes: Sequence[str], multilabel: bool, torchvision: str | None = None,
                         torchvision_kwargs: dict | None = None, label_map: Sequence[int] | None = None,
                         same_order: bool = True) -> LabelledImages | str:
    """The dataset under `folder` in the first layout that exists, or the reason it is missing (a skip, not an error)."""
    if (folder / "test.jsonl").is_file():
        return from_jsonl(folder / "test.jsonl", len(classes), multilabel)
    if (folder / "test").is_dir():
        return from_image_folder(folder / "test", classes, multilabel)
    if torchvision and folder.is_dir():
        try:
            return from_torchvision(folder, torchvision, dict(torchvision_kwargs or {}), classes, label_map, same_order)
        except (RuntimeError, FileNotFoundError, OSError, ImportError) as exc:
            return f"no test.jsonl or test/ folder, and torchvision {torchvision} could not read it ({str(exc).splitlines()[0]})"
    if not folder.is_dir():
        return f"{folder} does not exist"
    return f"no test.jsonl or test/<class>/ folder in {folder}"
