"""The reference teacher: a bilingual dual encoder trained from scratch on `emoji-zh-en` by recipes/emoji_teacher.yaml.

It is a checkpoint folder like any student's; this adapter gives it the `Teacher` interface.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from compress.model import DualEncoder, load_checkpoint
from compress.teachers.base import ImageFeatures, TextFeatures
from compress.tokenizer import BilingualTokenizer


class ReferenceTeacher:
    def __init__(self, model: DualEncoder, tokenizer: BilingualTokenizer, name: str = "reference") -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.embed_dim = model.spec.embed_dim
        self.map_channels = list(model.image.map_channels)
        self.image_size = model.spec.image_size
        self.logit_scale = float(model.logit_scale.exp())

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ReferenceTeacher":
        model, tokenizer, _ = load_checkpoint(folder)
        return cls(model, tokenizer, name=f"reference:{Path(folder).name}")

    def to(self, device: torch.device | str) -> "ReferenceTeacher":
        self.model.to(device)
        return self

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        emb, maps = self.model.image.forward_features(pixels)
        return ImageFeatures(emb, maps)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        device = self.model.logit_scale.device
        emb, hidden = self.model.text.forward_features(self.tokenizer(texts).to(device))
        return TextFeatures(emb, hidden)

    def num_params(self) -> int:
        return self.model.tower_params()
