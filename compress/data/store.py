"""Training images that stay on disk: a real corpus (millions of pairs, ~150 kB each as uint8 at 224 px) must never be
held whole in memory (issue 17).

`LazyImages` stands where a uint8 (N, 3, S, S) tensor stood in a `PairSet`: `len`, `shape`, and indexing that
returns the decoded uint8 pixels of the rows asked for, read from their files (a tar member at an offset, or a whole
image file) and letterboxed exactly as the eager loaders did, so the same files give the same pixels either way.
Decoding happens where the indexing happens: in the DataLoader's worker processes when `data.workers` > 0.
The embedded emoji world stays a tensor; `cat_images` and `images_digest` take either.
"""
from __future__ import annotations

import hashlib
import io
from typing import Sequence, Union

import numpy as np
import torch

from compress.data.texts import TextColumn
from compress.errors import UserError


class _ImageRows:
    """The uint8 (N, 3, H, W) tensor surface a PairSet uses: `len`, `shape`, `dtype`, and indexing that decodes the
    rows asked for (`_rows_pixels`)."""

    _item: tuple[int, int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._item))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __getitem__(self, index) -> torch.Tensor:
        return _tensor_index(self._rows_pixels, index, len(self))

    def _rows_pixels(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError


class LazyImages(_ImageRows):
    """Images decoded on demand. Row i is `size[i]` bytes at `offset[i]` of file `files[source[i]]` (size -1: the
    whole file). `where[i]`-style names are built only for error messages."""

    def __init__(self, files: Sequence[str], source: np.ndarray, offset: np.ndarray, size: np.ndarray,
                 image_size: int, keys: Sequence[str] | None = None) -> None:
        # a TextColumn (compress/data/texts.py) stays one: a manifest names a file per row
        self.files = files if isinstance(files, TextColumn) else list(files)
        self.source = np.asarray(source, dtype=np.int32)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self.image_size = int(image_size)
        # the sample keys of tar shards, for messages
        self.keys = keys if keys is None or isinstance(keys, TextColumn) else list(keys)
        if not (len(self.source) == len(self.offset) == len(self.size)):
            raise ValueError("LazyImages: source, offset and size differ in length")

    @property
    def _item(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def _rows_pixels(self, rows: np.ndarray) -> torch.Tensor:
        out = np.empty((len(rows), 3, self.image_size, self.image_size), dtype=np.uint8)
        for j, i in enumerate(rows.tolist()):
            out[j] = self.decode(i)
        return torch.from_numpy(out)

    def subset(self, index) -> "LazyImages":
        """The rows `index` names, still on disk."""
        rows = _rows(index, len(self))
        return LazyImages(self.files, self.source[rows], self.offset[rows], self.size[rows], self.image_size,
                          None if self.keys is None else _take(self.keys, rows))

    def at_size(self, image_size: int) -> "LazyImages":
        """The same rows decoded (letterboxed) at another square size."""
        return LazyImages(self.files, self.source, self.offset, self.size, image_size, self.keys)

    def train_views(self, rows: np.ndarray, params: torch.Tensor, teacher: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training views of `rows`, crop-consistent (issue 17): each image's shorter side resized to
        `CROP_MARGIN` x the larger input size, one random square crop per row placed and sized by its augmentation
        `params` (zoom, shift x, shift y: compress/data/augment.py), then that one crop resized to the student's
        `image_size` (uint8, letterbox's filter) and, with `teacher` = (size, PIL resample code), to the teacher's
        first resize with its own filter (uint8): what its image processor gives for that crop."""
        student = np.empty((len(rows), 3, self.image_size, self.image_size), dtype=np.uint8)
        t_size = teacher[0] if teacher is not None else 0
        teach = np.empty((len(rows), 3, t_size, t_size), dtype=np.uint8) if teacher is not None else None
        for j, i in enumerate(np.asarray(rows).tolist()):
            crop = self.crop(i, params[j], max(self.image_size, t_size))
            student[j] = _resized(crop, self.image_size, None)
            if teach is not None:
                teach[j] = _resized(crop, t_size, teacher[1])
        return torch.from_numpy(student), (torch.from_numpy(teach) if teach is not None else None)

    def crop(self, i: int, p: torch.Tensor, size: int):
        """Row i's training crop (a square PIL image) for augmentation draw `p`, the larger input side `size`."""
        from PIL import Image

        from compress.data.augment import MAX_SHIFT
        from compress.data.images import rgb

        from compress.readers import open_image

        data = self.read(i)
        try:  # JPEG: decode at a reduced scale, still >= 2x the crop
            img = rgb(open_image(io.BytesIO(data), draft=size * 2))
        except (UserError, OSError, ValueError):
            raise self._undecodable(i) from None
        w, h = img.size
        base = max(1, round(size * CROP_MARGIN))
        scale = base / min(w, h)
        w, h = max(base, round(w * scale)), max(base, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        zoom, sx, sy = (float(v) for v in p[:3])
        side = min(base, max(1, round(base / (CROP_MARGIN * zoom))))
        ux, uy = (min(1.0, max(0.0, (v / MAX_SHIFT + 1) / 2)) for v in (sx, sy))
        left, top = round(ux * (w - side)), round(uy * (h - side))
        return img.crop((left, top, left + side, top + side))

    # -- one row
    def where(self, i: int) -> str:
        f = self.files[self.source[i]]
        return f"{f}:{self.keys[i]}" if self.keys is not None else f

    def read(self, i: int) -> bytes:
        with open(self.files[self.source[i]], "rb") as f:
            if self.size[i] < 0:
                return f.read()
            f.seek(int(self.offset[i]))
            data = f.read(int(self.size[i]))
        if len(data) != self.size[i]:
            raise UserError(f"image {self.where(i)} is cut short on disk (the file changed after it was indexed); "
                            "restore it, or delete .cache/shard-index to index the corpus again")
        return data

    def decode(self, i: int) -> np.ndarray:
        from compress.data.images import decode_image

        try:
            data = self.read(i)
        except OSError as exn:
            raise UserError(f"image {self.where(i)} cannot be read ({exn.strerror or exn}); restore the file or "
                            "drop it from the corpus") from None
        pixels = decode_image(io.BytesIO(data), self.image_size)
        if isinstance(pixels, str):
            raise self._undecodable(i)
        return pixels

    def _undecodable(self, i: int) -> UserError:
        return UserError(f"image {self.where(i)} no longer decodes (it did when the corpus was indexed); restore it, "
                         "or delete .cache/shard-index to index the corpus again")

    def digest(self) -> str:
        """What identifies these images without reading them: the files (path, size, mtime) and each row's place."""
        import os

        h = hashlib.sha256(f"lazy {self.image_size} {len(self)}\n".encode())
        for f in self.files:
            st = os.stat(f)
            h.update(f"{f} {st.st_size} {st.st_mtime_ns}\n".encode())
        for a in (self.source, self.offset, self.size):
            h.update(a.tobytes())
        return h.hexdigest()


# Shorter side resized to this times the input size before a random crop: CLIP's 256 / 224, the margin its centre
# crop keeps at evaluation.
CROP_MARGIN = 256 / 224


def _resized(crop, size: int, resample: int | None) -> np.ndarray:
    """uint8 (3, size, size) of a square PIL crop: the teacher's filter (`resample`, a PIL code) as its image
    processor applies it, or letterbox's (LANCZOS, reducing_gap 3) for the student."""
    from PIL import Image

    if resample is None:
        out = crop.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    else:
        out = crop.resize((size, size), resample)
    return np.asarray(out).transpose(2, 0, 1)


class ConcatImages(_ImageRows):
    """Several image sources end to end (the pairs, then image-only rows): what `torch.cat` was for tensors."""

    def __init__(self, parts: Sequence[Union[torch.Tensor, "LazyImages", "ConcatImages"]]) -> None:
        self.parts = list(parts)
        shapes = {tuple(p.shape[1:]) for p in self.parts}
        if len(shapes) > 1:
            raise ValueError(f"ConcatImages: parts of different image shapes {sorted(shapes)}")
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self._item = tuple(self.parts[0].shape[1:]) if self.parts else (3, 0, 0)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _rows_pixels(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(rows), *self._item), dtype=torch.uint8)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            out[torch.from_numpy(sel)] = self.parts[p][torch.from_numpy(rows[sel] - self.starts[p])]
        return out

    def train_views(self, rows: np.ndarray, params: torch.Tensor, teacher: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`LazyImages.train_views` part by part (every part is on disk: see `crops_from_disk`)."""
        rows = np.asarray(rows, dtype=np.int64)
        student = torch.empty((len(rows), *self._item), dtype=torch.uint8)
        teach = None
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            s_p, t_p = self.parts[p].train_views(rows[sel] - self.starts[p], params[torch.from_numpy(sel)], teacher)
            student[torch.from_numpy(sel)] = s_p
            if t_p is not None:
                if teach is None:
                    teach = torch.empty((len(rows), *t_p.shape[1:]), dtype=torch.uint8)
                teach[torch.from_numpy(sel)] = t_p
        return student, teach

    def digest(self) -> str:
        h = hashlib.sha256(b"concat\n")
        for p in self.parts:
            h.update(images_digest(p).encode())
        return h.hexdigest()


ImageSource = Union[torch.Tensor, LazyImages, ConcatImages]


def _tensor_index(pixels, index, n: int) -> torch.Tensor:
    """Index as a uint8 tensor would be indexed: the first index picks rows (decoded by `pixels(rows)`), the rest
    index into them; an int first index drops the row dimension."""
    head, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
    if head is Ellipsis:
        head, rest = slice(None), index
    out = pixels(_rows(head, n))
    if isinstance(head, (int, np.integer)):
        return out[0][rest] if rest else out[0]
    return out[(slice(None), *rest)] if rest else out


def _rows(index, n: int) -> np.ndarray:
    """Row numbers (int64) from what a tensor accepts: an int, a slice, a list, or an int or bool tensor/array."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    if isinstance(index, (int, np.integer)):
        index = [int(index)]
    a = index.cpu().numpy() if torch.is_tensor(index) else np.asarray(index)
    if a.dtype == bool:
        if a.shape != (n,):
            raise IndexError(f"a boolean mask of shape {a.shape} for {n} images")
        return np.flatnonzero(a)
    a = a.astype(np.int64).reshape(-1)
    if a.size and (a.min() < -n or a.max() >= n):
        raise IndexError(f"image index out of range for {n} images")
    return np.where(a < 0, a + n, a)


def crops_from_disk(images: ImageSource) -> bool:
    """Whether training views of `images` are crops of the files (a corpus on disk), not augmented tensor rows."""
    if isinstance(images, LazyImages):
        return True
    return isinstance(images, ConcatImages) and all(crops_from_disk(p) for p in images.parts)


def _take(items: Sequence[str], rows: np.ndarray) -> Sequence[str]:
    return items.take(rows) if isinstance(items, TextColumn) else [items[i] for i in rows.tolist()]


def select_images(images: ImageSource, index) -> ImageSource:
    """`images[index]` that keeps a corpus on disk (a tensor is indexed as always)."""
    return images.subset(index) if isinstance(images, LazyImages) else images[index]


def cat_images(parts: Sequence[ImageSource]) -> ImageSource:
    """`torch.cat` when every part is a tensor (bit for bit today's sets), else a lazy concatenation."""
    if all(torch.is_tensor(p) for p in parts):
        return torch.cat(list(parts))
    return ConcatImages([p for p in parts if len(p)])


def images_digest(images: ImageSource) -> str:
    """sha256 identifying the images: their bytes for a tensor, their files and places for a lazy source."""
    if torch.is_tensor(images):
        h = hashlib.sha256()
        images = images.contiguous()
        h.update(f"{tuple(images.shape)} {images.dtype}\n".encode())
        h.update(memoryview(images.numpy()).cast("B"))
        return h.hexdigest()
    return images.digest()
