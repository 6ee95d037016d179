"""Small loss classes (open_clip style): one concept each, composed by the stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over a batch whose rows are distinct classes (the samplers guarantee no duplicates)."""

    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        logits = logit_scale.exp().clamp(max=100.0) * image @ text.t()
        target = torch.arange(image.shape[0], device=image.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class MarginRegularizer(nn.Module):
    """One-sided positive-pair margin term after Chen et al. (ICLR 2024).

    Only positive pairs whose cosine similarity is below `margin` are pushed up; pairs already past the margin
    and all negatives are left to the contrastive loss. This enlarges the margin the theory ties to zero-shot
    transfer without the temperature trade-off of sharpening the whole softmax.
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        cos = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
        return F.relu(self.margin - cos).mean()


def standardize(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Zero-mean unit-variance along the channel dim, so teachers of any scale give SmoothL1 targets near 1."""
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-6)


class FeatureDistillLoss(nn.Module):
    """SmoothL1 between an adapted student feature and a standardised teacher feature.

    Feature maps of different spatial size are matched by resizing the student map to the teacher's grid.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.dim() == 4 and student.shape[-2:] != teacher.shape[-2:]:
            student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        return F.smooth_l1_loss(student, standardize(teacher.detach()), beta=self.beta)


class LogitDistillLoss(nn.Module):
    """KL between the teacher's and the student's in-batch image->text (and text->image) softmax.

    The teacher's similarity matrix says which *other* captions are close to an image (e.g. "man firefighter" vs
    "woman firefighter"); one-hot InfoNCE targets throw that away. Both sides use their own temperature.
    """

    def forward(self, s_img, s_txt, s_scale, t_img, t_txt, t_scale: float) -> torch.Tensor:
        s = s_scale.exp().clamp(max=100.0) * F.normalize(s_img, dim=-1) @ F.normalize(s_txt, dim=-1).t()
        with torch.no_grad():
            t = t_scale * F.normalize(t_img, dim=-1) @ F.normalize(t_txt, dim=-1).t()
        kl = lambda a, b: F.kl_div(F.log_softmax(a, dim=1), F.softmax(b, dim=1), reduction="batchmean")
        return 0.5 * (kl(s, t) + kl(s.t(), t.t()))


class EmbeddingDistillLoss(nn.Module):
    """Mean cosine distance between a student's embeddings and a frozen reference's for the same inputs.

    Cosine, not MSE: zero-shot scores only see directions, so a quantised tower may keep a different norm."""

    def forward(self, student: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(student, reference.detach(), dim=-1)).mean()
