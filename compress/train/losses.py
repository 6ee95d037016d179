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


MARGIN_FORMS = ("hinge", "linear", "square")


class MarginRegularizer(nn.Module):
    """Positive-pair term after Chen et al. (ICLR 2024): on matched pairs only, it only pushes their cosine up.

    Per positive cosine s = s_ii: `hinge` relu(margin - s) has gradient -1 below `margin` and none above it, so once
    every positive passes the margin it is inert; `linear` 1 - s (Chen et al.'s positive-pair term) pulls every
    positive with a constant gradient -1; `square` (1 - s)^2 pulls with -2(1 - s), always on but fading near 1.
    Negatives are left to the contrastive loss, so no form sharpens the whole softmax the way a temperature does.
    """

    def __init__(self, margin: float = 0.5, form: str = "hinge") -> None:
        super().__init__()
        if form not in MARGIN_FORMS:
            raise ValueError(f"margin form {form!r}: use one of {', '.join(MARGIN_FORMS)}")
        self.margin, self.form = margin, form

    @staticmethod
    def positive_cosines(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        cos = self.positive_cosines(image, text)
        if self.form == "linear":
            return (1.0 - cos).mean()
        if self.form == "square":
            return ((1.0 - cos) ** 2).mean()
        return F.relu(self.margin - cos).mean()

    def active(self, cos: torch.Tensor) -> torch.Tensor:
        """Where the term has a non-zero gradient: below `margin` for hinge, below 1 for linear and square."""
        return cos < (self.margin if self.form == "hinge" else 1.0)

    @torch.no_grad()
    def activity(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch statistics of the term, no gradient: `pos_cos` (mean s_ii), `active` (fraction of positives where
        the term pushes) and `batch_margin` min_i (s_ii - max_{j!=i} s_ij), with s_ij = cos(image_i, text_j)."""
        image, text = image.detach().float(), text.detach().float()
        with torch.autocast(image.device.type, enabled=False):  # fp32 statistics under bf16 training too
            pos = self.positive_cosines(image, text)  # as the loss computes them
            s = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
        off = s.masked_fill(torch.eye(s.shape[0], dtype=torch.bool, device=s.device), float("-inf"))
        return {"pos_cos": pos.mean(), "active": self.active(pos).float().mean(),
                "batch_margin": (pos - off.max(dim=1).values).min()}


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
