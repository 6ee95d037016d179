"""The one teacher interface every stage talks to, whatever the teacher is (HF CLIP family or the reference teacher).

Teachers take raw pixels in [0, 1] (B, 3, H, W) and resize + normalise them to their own preprocessing, the way
timm's DistillationTeacher re-normalises the student's input: teacher and student preprocessing can differ.
Text goes in as plain strings, because teacher and student never share a tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import torch


@dataclass
class ImageFeatures:
    embedding: torch.Tensor  # (B, D) projected image embedding, not L2-normalised
    maps: list[torch.Tensor] = field(default_factory=list)  # intermediate feature maps, each (B, C_i, h_i, w_i)


@dataclass
class TextFeatures:
    embedding: torch.Tensor  # (B, D) projected text embedding, not L2-normalised
    hidden: torch.Tensor | None = None  # (B, H) pooled last hidden state before projection


@runtime_checkable
class Teacher(Protocol):
    name: str
    embed_dim: int
    map_channels: list[int]  # channels of each map returned by encode_image

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures: ...

    def encode_text(self, texts: Sequence[str]) -> TextFeatures: ...

    def num_params(self) -> int: ...
