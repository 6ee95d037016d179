"""A world where the teacher knows more than the students: the emoji classes split into S, K and U.

- **S**: the students' image-caption pairs (and the closed-set `eval` check);
- **K**: pairs the teacher trains on and the students never get as pairs (`known`: can distillation carry them?);
- **U**: nobody trains on them (`unseen`, stratified below).

The split is drawn by its own seed (`data.split_seed`), apart from the render and training seed, so the class split
and the student's initialisation can vary separately. U is the emoji build's held-out pick; S and K partition the
rest. `unseen` is stratified because its classes are not alike: a name whose every word (en) and character (zh) some
trained name also has ("sibling"), a name with a word or character no trained name has ("novel": the tokenizer and
the towers have never seen it), and flags (country names, which no other class shares).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from compress.data.emoji import EmojiClass, Split

STRATA = ("sibling", "novel", "flags")
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
_TAG_BLACK_FLAG = "\U0001F3F4"


@dataclass(frozen=True)
class ClassSplit:
    students: list[int]  # S
    teacher_only: list[int]  # K
    unseen: list[int]  # U

    def __post_init__(self) -> None:
        if set(self.students) & set(self.teacher_only) or (set(self.students) | set(self.teacher_only)) & set(self.unseen):
            raise ValueError("S, K and U must not share a class")


def split_classes(seen: Sequence[int], unseen: Sequence[int], n_total: int, student_fraction: float,
                  split_seed: int) -> ClassSplit:
    """S and K from the seen classes: round(n_total * student_fraction) of them (at least one of each) go to S."""
    k = int(round(n_total * student_fraction))
    k = max(1, min(k, len(seen) - 1)) if len(seen) >= 2 else len(seen)
    perm = np.random.default_rng([split_seed, 0x5C]).permutation(len(seen))
    seen = list(seen)
    students = sorted(seen[int(i)] for i in perm[:k])
    teacher_only = sorted(seen[int(i)] for i in perm[k:])
    return ClassSplit(students, teacher_only, sorted(unseen))


def restrict(split: Split, class_ids: Iterable[int], label_space: Sequence[int] | None = None) -> Split:
    """The rows of `split` whose class is in `class_ids`, scored against those classes (default) or against
    `label_space` (a stratum of `unseen` is scored against all of U, so it is as hard as `unseen` itself)."""
    keep_ids = set(int(c) for c in class_ids)
    rows = torch.tensor([int(l) in keep_ids for l in split.labels.tolist()], dtype=torch.bool)
    space = sorted(set(split.labels[rows].tolist())) if label_space is None else list(label_space)
    pick = lambda t: None if t is None else t[rows]  # noqa: E731
    return Split(split.images[rows], split.labels[rows], space, pick(split.styles), pick(split.renders))


def is_flag(cls: EmojiClass) -> bool:
    return any(ord(ch) in _REGIONAL_INDICATORS for ch in cls.emoji) or cls.emoji.startswith(_TAG_BLACK_FLAG) \
        or cls.en.lower().startswith("flag")


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^\w]+", name.lower()) if w}


def _chars(name: str) -> set[str]:
    return {ch for ch in name if not ch.isspace()}


def unseen_strata(classes: Sequence[EmojiClass], unseen: Iterable[int], trained: Iterable[int]) -> dict[str, list[int]]:
    """U's classes by stratum. `trained`: every class any model trains on (S and K): what "seen" means."""
    by_index = {c.index: c for c in classes}
    words = set().union(*(_words(by_index[i].en) for i in trained))
    chars = set().union(*(_chars(by_index[i].zh) for i in trained))
    out: dict[str, list[int]] = {s: [] for s in STRATA}
    for i in sorted(unseen):
        c = by_index[i]
        if is_flag(c):
            out["flags"].append(i)
        elif _words(c.en) - words or _chars(c.zh) - chars:
            out["novel"].append(i)
        else:
            out["sibling"].append(i)
    return out
