"""Image towers: a timm backbone plus a linear projection into the shared embedding space.

Pixel normalisation lives inside the module so the exported `.pte` takes plain [0, 1] RGB (N, 3, H, W): the phone
never has to know the mean/std, which removes a whole class of preprocessing mismatches.
"""
from __future__ import annotations

from typing import Sequence

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTower(nn.Module):
    def __init__(
        self,
        timm_name: str,
        embed_dim: int,
        image_size: int,
        map_indices: Sequence[int] = (-3, -2, -1),
        timm_kwargs: dict | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        backbone: nn.Module | None = None,
    ) -> None:
        """`backbone`: an already built timm model (a searched spec, students/spaces.py) instead of `timm_name`."""
        super().__init__()
        kwargs = dict(timm_kwargs or {})
        if "vit" in timm_name and "mobilevit" not in timm_name:
            kwargs.setdefault("img_size", image_size)
        if backbone is None:
            backbone = timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)
        self.backbone = backbone
        # head_hidden_size: what forward() returns when a head conv follows the last stage (MobileNetV4); timm sets it
        # to num_features for the rest.
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.proj = nn.Linear(width, embed_dim, bias=False)
        self.image_size = image_size
        self.embed_dim = embed_dim
        self.timm_name = timm_name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        n_stages = len(self.backbone.feature_info) if hasattr(self.backbone, "feature_info") else 3
        self.map_indices = sorted({i % n_stages for i in map_indices})
        was_training = self.backbone.training
        self.backbone.eval()  # the shape probe is batch 1: BatchNorm must not see it as a training batch
        with torch.no_grad():
            maps = self.backbone.forward_intermediates(
                torch.zeros(1, 3, image_size, image_size), indices=self.map_indices,
                output_fmt="NCHW", intermediates_only=True,
            )
        self.backbone.train(was_training)
        self.map_channels = [m.shape[1] for m in maps]
        self.map_sizes = [tuple(m.shape[-2:]) for m in maps]

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> projected embedding (not L2-normalised)."""
        return self.proj(self.backbone(self.normalize(pixels)))

    def forward_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embedding plus the intermediate feature maps that stage 1 distils."""
        x = self.normalize(pixels)
        final, maps = self.backbone.forward_intermediates(x, indices=self.map_indices, output_fmt="NCHW")
        pooled = self.backbone.forward_head(final, pre_logits=True)
        return self.proj(pooled), list(maps)
