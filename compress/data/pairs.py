"""Bilingual image-text pairs for training (the sampler that batches them is `compress/train/data.py`).

Contrastive losses treat every other row as a negative, so two renders of one emoji in a batch would be false
negatives. Samples therefore carry a `group` (the class for emoji data, the row for manifests) and each batch
holds at most one sample per group.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from compress.prompts import caption


@dataclass
class PairSet:
    """Training images with their captions in English and Chinese, grouped (see the module docstring).

    `en[g]` / `zh[g]` is group g's caption (a class name when `templated`), or None where group g has no caption
    in that language: real corpora have rows with only one language, and they are kept for the language they have.
    `captions()` returns None at those positions, so training MUST mask missing captions per language: a None is
    never tokenized, and each language's image-text loss only uses the batch rows where `has(lang)[groups]` is
    True (simplest: the contrastive loss over that sub-batch, skipped when it has fewer than 2 rows; images without
    a caption may still serve as extra negatives for the text->image direction). Image-only losses (teacher image
    distillation) use every row.
    Groups with several captions in a language keep the first in `en` / `zh` and all of them in `more`;
    `captions()` draws one of them at random from `rng` each time.
    """

    images: torch.Tensor  # uint8 (N, 3, H, W)
    groups: torch.Tensor  # int64 (N,) index into en/zh
    en: list[str | None]  # one caption (or class name) per group; None = no English caption for that group
    zh: list[str | None]
    templated: bool = True  # emoji class names get a random caption template each time
    # lang -> group -> all of the group's captions, only for groups with two or more
    more: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_captions(
        cls, images: torch.Tensor, en: Sequence[Sequence[str]], zh: Sequence[Sequence[str]]
    ) -> "PairSet":
        """One group per image from every caption of each image per language (empty = none in that language)."""
        first = lambda caps: [c[0] if len(c) else None for c in caps]  # noqa: E731
        several = lambda caps: {g: tuple(c) for g, c in enumerate(caps) if len(c) > 1}  # noqa: E731
        more = {lang: m for lang, m in (("en", several(en)), ("zh", several(zh))) if m}
        return cls(images, torch.arange(len(en)), first(en), first(zh), templated=False, more=more)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_groups(self) -> int:
        return len(self.en)

    def has(self, lang: str) -> torch.Tensor:
        """bool (num_groups,): which groups have a caption in `lang`."""
        names = self.en if lang == "en" else self.zh
        return torch.tensor([n is not None for n in names], dtype=torch.bool)

    def captions(self, groups: list[int], lang: str, rng: random.Random) -> list[str | None]:
        """One caption per group in `lang`; None where the group has none (mask those, see the class docstring)."""
        names = self.en if lang == "en" else self.zh
        alts = self.more.get(lang, {})
        out: list[str | None] = []
        for g in groups:
            name = names[g]
            if name is None:
                out.append(None)
            elif self.templated:
                out.append(caption(name, lang, rng))
            else:
                out.append(rng.choice(alts[g]) if g in alts else name)
        return out

    def texts(self, lang: str) -> list[str]:
        """Every caption in `lang` (all of a group's captions, Nones left out): e.g. a tokenizer's training corpus."""
        names = self.en if lang == "en" else self.zh
        alts = self.more.get(lang, {})
        return [t for g, n in enumerate(names) if n is not None for t in alts.get(g, (n,))]
