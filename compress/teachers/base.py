"""The one teacher interface every stage talks to, whatever the teacher is (HF CLIP family or the reference teacher).

Teachers take raw pixels in [0, 1] (B, 3, H, W) and resize + normalise them to their own preprocessing, the way
timm's DistillationTeacher re-normalises the student's input: teacher and student preprocessing can differ.
Text goes in as plain strings, because teacher and student never share a tokenizer.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import torch

from compress.errors import UserError


@dataclass
class ImageFeatures:
    embedding: torch.Tensor  # (B, D) projected image embedding, not L2-normalised
    maps: list[torch.Tensor] = field(default_factory=list)  # intermediate feature maps, each (B, C_i, h_i, w_i)


@dataclass
class TextFeatures:
    embedding: torch.Tensor  # (B, D) projected text embedding, not L2-normalised
    hidden: torch.Tensor | None = None  # (B, H) pooled last hidden state before projection
    # (B, H_i) pooled states of the teacher's `text_layers`, shallow to deep (empty unless text_layers is set; then
    # `hidden` is None: the taps replace the single text-hidden target)
    layers: list[torch.Tensor] = field(default_factory=list)


@runtime_checkable
class Teacher(Protocol):
    name: str
    embed_dim: int
    map_channels: list[int]  # channels of each map returned by encode_image

    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures: ...

    def encode_text(self, texts: Sequence[str]) -> TextFeatures: ...

    def num_params(self) -> int: ...


def resolve_blocks(layers: Sequence[int], num_layers: int, key: str, tower: str) -> list[int]:
    """0-based block indices of a `num_layers`-block tower, ascending (shallow to deep); negative indices count from
    the end. Out-of-range, repeated or non-integer entries are one-line UserErrors naming `key`."""
    resolved: dict[int, int] = {}
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise UserError(f"{key}: {layer!r} is not a block index (an integer)")
        layer = int(layer)
        if not -num_layers <= layer < num_layers:
            raise UserError(
                f"{key}: {layer} is out of range for a {num_layers}-block {tower} tower "
                f"(use 0..{num_layers - 1}, or -{num_layers}..-1 from the end)"
            )
        index = layer % num_layers
        if index in resolved:
            raise UserError(f"{key}: {resolved[index]} and {layer} are the same block ({index}); list each block once")
        resolved[index] = layer
    return sorted(resolved)


def resolve_text_layers(text_layers: Sequence[int] | None, num_layers: int) -> list[int] | None:
    """Text blocks whose pooled states are the text-hidden targets (`teacher.text_layers`), shallow to deep, 0-based;
    None = unset (the single `text_layer` target); [] = no text-hidden target."""
    return None if text_layers is None else resolve_blocks(text_layers, num_layers, "teacher.text_layers", "text")

