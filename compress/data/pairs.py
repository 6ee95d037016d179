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

from compress.data.store import ImageSource, cat_images
from compress.data.texts import CaptionColumn, TextColumn, concat_texts
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

    Unpaired stage-1 data (`stage1_pairs`): an image-only row is a group with None in both languages; a text-only
    row has no image at all. Text-only rows come last: samples `num_images..len-1` have no row in `images`, and
    `has_image()` says which samples have one (None: all, as in every set that has no text-only rows). The batches
    carry it as `Batch.has_image`, and every image loss uses only the rows where it is True.
    """

    images: ImageSource  # uint8 (N, 3, H, W): a tensor, or a corpus left on disk (compress/data/store.py)
    groups: torch.Tensor  # int64 (N,) index into en/zh
    # one caption (or class name) per group; None = no English caption for that group. A list, or for a corpus a
    # TextColumn (compress/data/texts.py: flat, so forked DataLoader workers do not copy a million strings each)
    en: Sequence[str | None]
    zh: Sequence[str | None]
    templated: bool = True  # emoji class names get a random caption template each time
    # lang -> group -> all of the group's captions, only for groups with two or more
    more: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def from_captions(
        cls, images: torch.Tensor, en: Sequence[Sequence[str]], zh: Sequence[Sequence[str]]
    ) -> "PairSet":
        """One group per image from every caption of each image per language (empty = none in that language)."""
        first, more = _first_and_more(en, zh)
        return cls(images, torch.arange(len(en)), *first, templated=False, more=more)

    def __len__(self) -> int:
        return int(self.groups.shape[0])

    @property
    def num_images(self) -> int:
        """Samples with an image: the first `num_images` (text-only samples come after them)."""
        return int(self.images.shape[0])

    def has_image(self, index: torch.Tensor) -> torch.Tensor | None:
        """bool per sample of `index`: whether it has an image; None when every sample of the set has one."""
        if self.num_images == len(self):
            return None
        return index < self.num_images

    @property
    def num_groups(self) -> int:
        return len(self.en)

    def has(self, lang: str) -> torch.Tensor:
        """bool (num_groups,): which groups have a caption in `lang`."""
        names = self.en if lang == "en" else self.zh
        if isinstance(names, TextColumn):
            return torch.from_numpy(names.present())
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

    def texts(self, lang: str) -> Sequence[str]:
        """Every caption in `lang` (all of a group's captions, Nones left out): e.g. a tokenizer's training corpus.
        A TextColumn where the captions are one (and no group has several), else a list."""
        names = self.en if lang == "en" else self.zh
        alts = self.more.get(lang, {})
        if isinstance(names, TextColumn) and not alts:
            return names.dropna()
        return [t for g, n in enumerate(names) if n is not None for t in alts.get(g, (n,))]


def _first_and_more(en: Sequence[Sequence[str]], zh: Sequence[Sequence[str]]
                    ) -> tuple[tuple[Sequence[str | None], Sequence[str | None]], dict[str, dict[int, tuple[str, ...]]]]:
    """Per row, its first caption in each language (None: none), and lang -> row -> all its captions for the rows
    with two or more. CaptionColumns give TextColumns (flat), lists give lists."""
    def first(caps: Sequence[Sequence[str]]) -> Sequence[str | None]:
        return caps.first() if isinstance(caps, CaptionColumn) else [c[0] if len(c) else None for c in caps]

    def several(caps: Sequence[Sequence[str]]) -> dict[int, tuple[str, ...]]:
        if isinstance(caps, CaptionColumn):
            return caps.several()
        return {g: tuple(c) for g, c in enumerate(caps) if len(c) > 1}

    more = {lang: m for lang, m in (("en", several(en)), ("zh", several(zh))) if m}
    return (first(en), first(zh)), more


def text_only_pairs(en: Sequence[Sequence[str]], zh: Sequence[Sequence[str]], templated: bool,
                    image_shape: tuple[int, int, int]) -> PairSet:
    """Text with no image, one group per row (a row's captions per language; empty = none in that language).
    `templated`: the captions are class names or labels that get a caption template, as the emoji pairs' do."""
    first, more = _first_and_more(en, zh)
    return PairSet(torch.zeros((0, *image_shape), dtype=torch.uint8), torch.arange(len(en)), *first,
                   templated=templated, more=more)


def image_only_pairs(images: torch.Tensor, groups: torch.Tensor | None = None) -> PairSet:
    """Images with no caption (None in both languages), one group per image unless `groups` says otherwise."""
    groups = torch.arange(len(images)) if groups is None else groups
    n = int(groups.max()) + 1 if len(groups) else 0
    return PairSet(images, groups, [None] * n, [None] * n)


def stage1_pairs(pairs: PairSet, image_only: PairSet | None = None, text_only: PairSet | None = None) -> PairSet:
    """Stage 1's training set: the pairs, then the image-only rows, then the text-only rows (images none), each with
    groups of its own. With neither, `pairs` itself (today's stage 1, bit for bit). Text-only captions follow the
    pairs' `templated` (a class name or label gets a template, a caption is used as it is): they must agree."""
    if image_only is None and text_only is None:
        return pairs
    parts = [pairs] + [p for p in (image_only, text_only) if p is not None]
    if len(pairs) != pairs.num_images or (image_only is not None and len(image_only) != image_only.num_images):
        raise ValueError("stage1_pairs: only the text-only set may hold samples without an image")
    if text_only is not None and text_only.num_groups and text_only.templated != pairs.templated:
        raise ValueError("stage1_pairs: the text-only captions and the pairs must agree on `templated`")
    images = cat_images([pairs.images] + ([image_only.images] if image_only is not None else []))
    groups, more, offset = [], {}, 0
    for p in parts:
        groups.append(p.groups + offset)
        for lang, m in p.more.items():
            more.setdefault(lang, {}).update({g + offset: c for g, c in m.items()})
        offset += p.num_groups
    return PairSet(images, torch.cat(groups), concat_texts([p.en for p in parts]), concat_texts([p.zh for p in parts]),
                   templated=pairs.templated, more=more)


def labelled_pairs(pairs: PairSet, images: torch.Tensor, labels: Sequence[int], names: PairSet) -> PairSet:
    """`pairs` plus `images`, image i captioned with group `labels[i]` of `names` (a text-only set): pseudo-labelled
    pairs. Images given one label share its group (a batch never holds two of them); unused names are left out."""
    if len(labels) != len(images):
        raise ValueError(f"labelled_pairs: {len(images)} images but {len(labels)} labels")
    if names.num_groups and names.templated != pairs.templated:
        raise ValueError("labelled_pairs: the names and the pairs must agree on `templated`")
    used = sorted(set(int(x) for x in labels))
    pos = {g: i for i, g in enumerate(used)}
    groups = torch.tensor([pairs.num_groups + pos[int(x)] for x in labels], dtype=torch.int64)
    more = {lang: dict(m) for lang, m in pairs.more.items()}
    for lang, m in names.more.items():
        more.setdefault(lang, {}).update({pairs.num_groups + pos[g]: c for g, c in m.items() if g in pos})
    return PairSet(cat_images([pairs.images, images]), torch.cat([pairs.groups, groups]),
                   concat_texts([pairs.en, [names.en[g] for g in used]]),
                   concat_texts([pairs.zh, [names.zh[g] for g in used]]),
                   templated=pairs.templated, more=more)
