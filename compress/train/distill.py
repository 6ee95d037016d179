"""Stage 1, feature distillation: each student tower learns its teacher tower's features.

Image: intermediate feature maps through 1x1 conv adapters and the pooled embedding through a linear adapter.
Text: the embedding and the pooled hidden state, on English AND Chinese captions, each encoded by the teacher with
its own tokenizer. The embedding adapter is shared by both towers, so matching the teacher's joint space through one
map also aligns the student's image and text embeddings with each other before stage 2 starts.

Targets come from a `Targets` source: the teacher itself (`OnlineTargets`), or a teacher-feature cache that holds
them for K views of every sample, so stage 1 can train with no teacher in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from compress.model import DualEncoder
from compress.recipe.schema import DistillConfig
from compress.teachers.base import ImageFeatures, Teacher, TextFeatures
from compress.train.data import Batch, trim_padding
from compress.train.losses import FeatureDistillLoss
from compress.train.loop import param_groups


@dataclass
class TargetShapes:
    embed_dim: int
    map_channels: list[int]
    hidden_dim: int | None


class Targets(Protocol):
    """Stage-1 targets for a batch: image features of its pixels, and text features of its captions: the English
    ones present, then the Chinese ones present (`present_captions` order)."""

    shapes: TargetShapes

    def image(self, batch: Batch) -> ImageFeatures: ...

    def text(self, batch: Batch) -> TextFeatures: ...


def present_captions(batch: Batch) -> list[str]:
    return [c for c in batch.en if c is not None] + [c for c in batch.zh if c is not None]


class OnlineTargets:
    """The teacher computes the targets of every batch (it must stay in memory)."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        probe = teacher.encode_text(["a", "一"])
        hidden = None if probe.hidden is None else int(probe.hidden.shape[-1])
        self.shapes = TargetShapes(int(teacher.embed_dim), list(teacher.map_channels), hidden)

    def image(self, batch: Batch) -> ImageFeatures:
        with torch.no_grad():
            return self.teacher.encode_image(batch.pixels)

    def text(self, batch: Batch) -> TextFeatures:
        with torch.no_grad():
            return self.teacher.encode_text(present_captions(batch))


class Adapters(nn.Module):
    """Student -> teacher feature adapters; trained with the student and thrown away after stage 1."""

    def __init__(self, student: DualEncoder, shapes: TargetShapes) -> None:
        super().__init__()
        pairs = list(zip(student.image.map_channels[::-1], shapes.map_channels[::-1]))[::-1]
        self.maps = nn.ModuleList([nn.Conv2d(s, t, kernel_size=1) for s, t in pairs])
        self.embed = nn.Linear(student.spec.embed_dim, shapes.embed_dim)
        self.hidden = nn.Linear(student.text.width, shapes.hidden_dim) if shapes.hidden_dim else None


class DistillStage(nn.Module):
    name = "distill"
    description = "stage 1: distill"

    def __init__(self, student: DualEncoder, targets: Targets, cfg: DistillConfig, seed: int = 0) -> None:
        super().__init__()
        self.image, self.text = student.image, student.text  # the towers only: the temperature is stage 2's
        torch.manual_seed(seed)
        self.adapters = Adapters(student, targets.shapes)
        self.targets, self.cfg, self.crit = targets, cfg, FeatureDistillLoss()
        self.train()

    def param_groups(self) -> list[dict]:
        return param_groups(self.parameters(), self.cfg.lr, self.cfg.weight_decay)

    def after_step(self) -> None:
        pass

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, crit, dev = self.cfg, self.crit, batch.pixels.device
        t_img = self.targets.image(batch)
        s_emb, s_maps = self.image.forward_features(batch.pixels)
        n = len(self.adapters.maps)
        t_maps = [m.to(dev) for m in t_img.maps[-n:]] if n else []
        map_loss = sum(crit(a(s), t) for a, s, t in zip(self.adapters.maps, s_maps[-n:], t_maps)) / max(1, n)
        img_emb = crit(self.adapters.embed(s_emb), t_img.embedding.to(dev))
        loss = cfg.map_weight * map_loss + cfg.embed_weight * img_emb
        parts = {"maps": torch.as_tensor(map_loss).detach(), "image_embed": img_emb.detach()}
        ids = torch.cat([batch.en_ids[batch.has_en], batch.zh_ids[batch.has_zh]])
        if len(ids):
            t_txt = self.targets.text(batch)
            s_txt, s_hidden = self.text.forward_features(trim_padding(ids))
            txt = crit(self.adapters.embed(s_txt), t_txt.embedding.to(dev))
            loss = loss + cfg.embed_weight * txt
            parts["text_embed"] = txt.detach()
            if self.adapters.hidden is not None and t_txt.hidden is not None:
                hid = crit(self.adapters.hidden(s_hidden), t_txt.hidden.to(dev))
                loss = loss + cfg.hidden_weight * hid
                parts["text_hidden"] = hid.detach()
        return loss, parts
