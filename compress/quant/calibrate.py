"""What post-training quantization observes: the first rows of the run's own training split, never a default build.

One source for every int8 path (the run's `ptq-int8`, QAT's `calibrate: true` ranges, `export --quant int8`'s
post-training fallback and the Ethos-U quantizer), so a run that holds classes out as `unseen` never calibrates on
them: calibrating on held-out classes would leak them into an `unseen` eval that claims to be zero-shot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from compress.data.augment import to_float
from compress.data.pairs import PairSet
from compress.prompts import LANGS, caption
from compress.tokenizer import BilingualTokenizer

# BATCHES x SIZE rows: what the run's ptq-int8 has always observed (deterministic: the same on every rerun). A
# recipe's qat.ptq_calibration_batches sets the batches of every calibration its run does (compress/pipeline/quantize.py).
BATCHES = 4
SIZE = 64


@dataclass
class Calibration:
    """Calibration batches per tower (each a tuple of model inputs) and the training groups they were drawn from."""

    image: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    text: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image)

    def tower(self, name: str) -> list[tuple[torch.Tensor, ...]]:
        return self.image if name == "image" else self.text


def calibration_batches(train: PairSet, tokenizer: BilingualTokenizer, batches: int = BATCHES, size: int = SIZE):
    """The first `batches` x `size` training images and their captions (eval template, both languages), tokenized:
    yields (pixels, ids, groups) per batch."""
    for i in range(batches):
        rows = slice(i * size, (i + 1) * size)
        if rows.start >= len(train):
            return
        groups = train.groups[rows].tolist()
        texts = [caption(n, lang) if train.templated else n
                 for lang in LANGS for n in (getattr(train, lang)[g] for g in groups) if n is not None]
        yield to_float(train.images[rows]), tokenizer(texts), groups


def calibration_set(train: PairSet, tokenizer: BilingualTokenizer, batches: int = BATCHES,
                    size: int = SIZE) -> Calibration:
    cal = Calibration()
    for pixels, ids, groups in calibration_batches(train, tokenizer, batches, size):
        cal.image.append((pixels,))
        cal.text.append((ids,))
        cal.groups += groups
    return cal


def observe(module: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]) -> None:
    """Run the batches through a prepared module in eval form (observers record, nothing trains)."""
    with torch.no_grad():
        for batch in batches:
            module(*batch)
