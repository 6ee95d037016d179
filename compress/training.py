"""What every training stage shares: accelerate setup, the optimiser/schedule, and turning a batch into tensors."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from accelerate import Accelerator
from torch import nn

from compress.data.augment import train_augment
from compress.data.pairs import PairSet
from compress.tokenizer import BilingualTokenizer


def make_accelerator() -> Accelerator:
    """accelerate picks the device (CPU here, GPU/multi-process where there is one); fp32 everywhere for parity."""
    return Accelerator(mixed_precision="no")


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float, scaled: Iterable[nn.Parameter] = (), scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW without decay on norms/biases; `scaled` params get lr * scale."""
    groups = []
    for group, group_lr in ((list(params), lr), (list(scaled), lr * scale)):
        group = [p for p in group if p.requires_grad]
        groups += [
            {"params": [p for p in group if p.dim() >= 2], "weight_decay": weight_decay, "lr": group_lr},
            {"params": [p for p in group if p.dim() < 2], "weight_decay": 0.0, "lr": group_lr},
        ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98), eps=1e-6)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Batch:
    pixels: torch.Tensor  # float [0, 1]
    en: list[str]
    zh: list[str]
    en_ids: torch.Tensor | None = None
    zh_ids: torch.Tensor | None = None


def make_batch(
    pairs: PairSet, idx: torch.Tensor, groups: list[int], rng: random.Random, gen: torch.Generator,
    tokenizer: BilingualTokenizer | None, device: torch.device,
) -> Batch:
    pixels = train_augment(pairs.images[idx], gen).to(device)
    en, zh = pairs.captions(groups, "en", rng), pairs.captions(groups, "zh", rng)
    batch = Batch(pixels, en, zh)
    if tokenizer is not None:
        batch.en_ids, batch.zh_ids = tokenizer(en).to(device), tokenizer(zh).to(device)
    return batch


def trim_padding(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop all-pad columns at the end. Exact for the text towers (masked attention + masked mean) and it makes
    training cost follow the real caption length instead of the export's fixed context."""
    used = (ids != pad_id).any(dim=0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :1]


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    parts: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"epoch_loss": self.losses, "epoch_parts": self.parts, "seconds": round(self.seconds, 2)}


def seeded(seed: int) -> tuple[random.Random, torch.Generator]:
    torch.manual_seed(seed)
    return random.Random(seed), torch.Generator().manual_seed(seed)


StepFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]
