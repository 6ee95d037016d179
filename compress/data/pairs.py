"""Bilingual image-text pairs for training, and the sampler that keeps each batch free of duplicate classes.

Contrastive losses treat every other row as a negative, so two renders of one emoji in a batch would be false
negatives. Samples therefore carry a `group` (the class for emoji data, the row for manifests) and each batch
holds at most one sample per group.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import torch

from compress.prompts import caption


@dataclass
class PairSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    groups: torch.Tensor  # int64 (N,) index into en/zh
    en: list[str]  # one caption (or class name) per group
    zh: list[str]
    templated: bool = True  # emoji class names get a random caption template each time

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_groups(self) -> int:
        return len(self.en)

    def captions(self, groups: list[int], lang: str, rng: random.Random) -> list[str]:
        names = self.en if lang == "en" else self.zh
        return [caption(names[g], lang, rng) if self.templated else names[g] for g in groups]


def epoch_batches(pairs: PairSet, batch_size: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """One epoch = every group once, with a random sample of it; batches of distinct groups."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(pairs.groups.tolist()):
        members.setdefault(g, []).append(i)
    order = list(members)
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        groups = order[start : start + batch_size]
        if len(groups) < 2:
            continue
        idx = torch.tensor([rng.choice(members[g]) for g in groups])
        yield idx, groups


def steps_per_epoch(pairs: PairSet, batch_size: int) -> int:
    n = len(set(pairs.groups.tolist()))
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)
