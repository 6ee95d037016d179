"""Training batches as a pure function of (seed, epoch, position): resumable, shardable and cacheable by key.

A sample is addressed by a key `(index, view)`. The view fixes everything random about that sample, its
augmentation and its caption templates, so:
- a resumed run, or one split over several processes, sees exactly the batches an uninterrupted single-process run
  sees (the plan of an epoch depends on nothing but the seed and the epoch number);
- a teacher-feature cache can hold the teacher's targets for K views of every sample (MobileCLIP's "reinforced
  dataset"), and the plan then draws views from `range(K)` instead of from 2**31.

An epoch visits every group (class or manifest row) once, with one of its samples; a batch never holds two samples
of one group, because contrastive losses would treat them as false negatives.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch

from compress.data.augment import apply_augment, augment_params, to_float
from compress.data.pairs import PairSet
from compress.data.store import crops_from_disk
from compress.errors import UserError
from compress.prompts import TEMPLATES
from compress.tokenizer import BilingualTokenizer

ONLINE_VIEWS = 2**31  # without a cache every epoch draws a fresh view: effectively unlimited augmentations


def key_seed(seed: int, index: int, view: int, what: str) -> int:
    """A 63-bit seed for one sample's view, stable across processes and Python versions (no `hash()`)."""
    digest = hashlib.blake2b(f"{seed}/{index}/{view}/{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def view_augment_params(seed: int, keys: list[tuple[int, int]]) -> torch.Tensor:
    """(n, 5) augmentation parameters, one seeded draw per key: the same key always gets the same augmentation."""
    gen = torch.Generator()
    rows = []
    for index, view in keys:
        gen.manual_seed(key_seed(seed, index, view, "aug"))
        rows.append(augment_params(1, gen))
    return torch.cat(rows) if rows else torch.zeros(0, 5)


def view_caption(pairs: PairSet, seed: int, index: int, view: int, lang: str) -> str | None:
    """The caption of one sample's view in `lang` (a template drawn for that view), or None if the row has none."""
    group = int(pairs.groups[index])
    names = pairs.en if lang == "en" else pairs.zh
    name = names[group]
    if name is None:
        return None
    rng = random.Random(key_seed(seed, index, view, lang))
    several = pairs.more.get(lang, {}).get(group)
    if several:  # a row with several captions in this language: the view picks one
        name = rng.choice(several)
    return rng.choice(TEMPLATES[lang]).format(name) if pairs.templated else name


@dataclass
class Batch:
    keys: torch.Tensor  # int64 (B, 2): (sample index, view)
    pixels: torch.Tensor  # float32 (B, 3, H, W) in [0, 1], augmented
    en: list[str | None]
    zh: list[str | None]
    en_ids: torch.Tensor | None = None  # int64 (B, context); rows without a caption are all padding
    zh_ids: torch.Tensor | None = None
    has_en: torch.Tensor | None = None  # bool (B,)
    has_zh: torch.Tensor | None = None
    # bool (B,): rows with an image; None = all of them. A text-only row's pixels are zeros that no image loss may
    # use (stage 1 with distill.text_only; see PairSet).
    has_image: torch.Tensor | None = None
    # float32 (B, 3, T, T) in [0, 1]: the teacher's view of the same crop as `pixels`, at its own first resize, for a
    # corpus on disk and a teacher that asked for it (KeyCollate's `teacher_input`); None: the teacher sees `pixels`.
    teacher_pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def rows(self, mask: torch.Tensor) -> "Batch":
        """The sub-batch of the rows where `mask` (bool (B,)) is True: tensors indexed, caption lists filtered."""
        keep = mask.tolist()
        pick = lambda t: None if t is None else t[mask]  # noqa: E731
        return Batch(self.keys[mask], self.pixels[mask], [c for c, k in zip(self.en, keep) if k],
                     [c for c, k in zip(self.zh, keep) if k], pick(self.en_ids), pick(self.zh_ids), pick(self.has_en),
                     pick(self.has_zh), pick(self.has_image), pick(self.teacher_pixels))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Move the tensors (accelerate's device placement calls this)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if torch.is_tensor(value):
                setattr(self, f.name, value.to(device, non_blocking=non_blocking))
        return self


class KeyCollate:
    """keys -> Batch: images gathered by index, augmented per view, captions drawn per view, then tokenised.

    A corpus on disk (compress/data/store.py) gives crop-consistent views instead: one random crop per view (placed
    and sized by the view's augmentation draw), resized for the student and, with `teacher_input` = (size, PIL
    resample code) of a teacher's image processor, for the teacher (`Batch.teacher_pixels`); the student's view also
    gets the photometric jitter, the teacher's is what its processor makes of the crop."""

    def __init__(self, pairs: PairSet, seed: int, tokenizer: BilingualTokenizer | None,
                 teacher_input: tuple[int, int] | None = None) -> None:
        self.pairs, self.seed, self.tokenizer, self.teacher_input = pairs, seed, tokenizer, teacher_input
        self.crops = crops_from_disk(pairs.images)

    def _views(self, index: torch.Tensor, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        params = view_augment_params(self.seed, keys)
        if not self.crops:
            return apply_augment(self.pairs.images[index], params), None
        student, teacher = self.pairs.images.train_views(index.numpy(), params, self.teacher_input)
        photometric = params.clone()
        photometric[:, 0], photometric[:, 1:3] = 1.0, 0.0  # the crop did the geometry
        return apply_augment(student, photometric), (to_float(teacher) if teacher is not None else None)

    def __call__(self, keys: list[tuple[int, int]]) -> Batch:
        index = torch.tensor([k[0] for k in keys], dtype=torch.long)
        has_image = self.pairs.has_image(index)
        teacher_pixels = None
        if has_image is None:  # every sample has an image (every set without text-only rows)
            pixels, teacher_pixels = self._views(index, keys)
        else:  # text-only rows: zero pixels, masked out of every image loss by `has_image`
            size = self.pairs.images.shape[1:]
            with_image = [k for k, h in zip(keys, has_image.tolist()) if h]
            seen, t_seen = self._views(index[has_image], with_image)
            pixels = torch.zeros((len(keys), *size), dtype=seen.dtype)
            pixels[has_image] = seen
            if t_seen is not None:
                teacher_pixels = torch.zeros((len(keys), *t_seen.shape[1:]), dtype=t_seen.dtype)
                teacher_pixels[has_image] = t_seen
        en = [view_caption(self.pairs, self.seed, i, v, "en") for i, v in keys]
        zh = [view_caption(self.pairs, self.seed, i, v, "zh") for i, v in keys]
        batch = Batch(torch.tensor(keys, dtype=torch.long).view(-1, 2), pixels, en, zh)
        batch.has_en = torch.tensor([c is not None for c in en], dtype=torch.bool)
        batch.has_zh = torch.tensor([c is not None for c in zh], dtype=torch.bool)
        batch.has_image = has_image
        batch.teacher_pixels = teacher_pixels
        if self.tokenizer is not None:
            # ids, and the captions a teacher reads: no more than the student's window of each (the length rule)
            batch.en_ids, batch.en = self.tokenizer.encode_with_window(en)
            batch.zh_ids, batch.zh = self.tokenizer.encode_with_window(zh)
        return batch


class KeyDataset(torch.utils.data.Dataset):
    """The dataset of keys: the batch sampler yields keys, the collate function does the work batched."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        return key

    def __len__(self) -> int:  # only for DataLoader bookkeeping; sampling is the plan's job
        return 0


def micro_batch_size(batch_size: int, grad_accum: int, world_size: int, num_groups: int) -> int:
    """Global micro-batch (all processes together): batch_size / grad_accum, capped by the groups there are, and a
    multiple of the process count so every process gets an equal slice."""
    micro = min(batch_size // grad_accum, num_groups // grad_accum)
    micro -= micro % world_size
    if micro < max(2, world_size):
        raise UserError(
            f"batch_size {batch_size} with grad_accum {grad_accum} over {world_size} process(es) leaves micro-batches "
            f"of {micro} samples ({num_groups} groups in the data); use a larger batch_size or a smaller grad_accum"
        )
    return micro


class EpochPlan(torch.utils.data.Sampler):
    """Batch sampler: the global micro-batches of one epoch, from `start` on. Set `epoch`/`start` before iterating.

    Batches are full (`batch_size` keys each), so accelerate's split_batches hands each process an equal
    contiguous slice and the processes together see exactly the batch a single process would.
    """

    def __init__(self, pairs: PairSet, batch_size: int, seed: int, grad_accum: int = 1, views: int | None = None) -> None:
        self.batch_size, self.seed, self.views = batch_size, seed, views
        # each group's samples, in sample order, groups ascending: flat arrays, not a list per group (a corpus has a
        # group per row, and this object is in every forked DataLoader worker)
        groups = pairs.groups.numpy().astype(np.int64, copy=False)
        self._rows = np.argsort(groups, kind="stable")
        _, self._starts, self._counts = np.unique(groups[self._rows], return_index=True, return_counts=True)
        self.num_groups = len(self._starts)
        per_epoch = self.num_groups // batch_size
        self.batches_per_epoch = per_epoch - per_epoch % grad_accum
        self.epoch, self.start = 0, 0

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's (sample index, view) of every group, in visiting order, as two int64 arrays."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(self.num_groups))
        rng.shuffle(order)
        index, view = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
        rows, starts, counts = self._rows, self._starts.tolist(), self._counts.tolist()
        for j, g in enumerate(order):
            index[j] = rng.choice(_Members(rows, starts[g], counts[g]))
            view[j] = rng.randrange(self.views) if self.views else rng.randrange(ONLINE_VIEWS)
        return index, view

    def _batch(self, index: np.ndarray, view: np.ndarray, i: int) -> list[tuple[int, int]]:
        b = self.batch_size
        return list(zip(index[i * b : (i + 1) * b].tolist(), view[i * b : (i + 1) * b].tolist()))

    def plan(self, epoch: int) -> list[list[tuple[int, int]]]:
        index, view = self.draw(epoch)
        return [self._batch(index, view, i) for i in range(self.batches_per_epoch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        index, view = self.draw(self.epoch)
        for i in range(self.start, self.batches_per_epoch):
            yield self._batch(index, view, i)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


class _Members:
    """One group's sample indices as a sequence for `random.choice`, which must see what the list it replaces gave it
    (the same length and items), so the draws stay those of every earlier run."""

    __slots__ = ("rows", "start", "count")

    def __init__(self, rows: np.ndarray, start: int, count: int) -> None:
        self.rows, self.start, self.count = rows, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return int(self.rows[self.start + i])


def trim_padding(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop all-pad columns at the end. Exact for the text towers (masked attention + masked mean) and it makes
    training cost follow the real caption length instead of the export's fixed context."""
    used = (ids != pad_id).any(dim=0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :1]
