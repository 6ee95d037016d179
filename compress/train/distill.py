"""Stage 1, feature distillation: each student tower learns its teacher tower's features.

Image: intermediate feature maps through 1x1 conv adapters and the pooled embedding through a linear adapter.
Text: the embedding and the pooled hidden state (or, with `teacher.text_layers`, pooled states of several teacher
blocks, each matched to a student block), on English AND Chinese captions, each encoded by the teacher with its own
tokenizer.

`distill.embed_adapter` says how the final embeddings meet the teacher's: `shared` (the default) sends both towers
through one linear adapter onto the teacher's joint space, which also aligns the student's image and text embeddings
with each other before stage 2 starts; `per_tower` gives each tower its own adapter onto its teacher tower's
embedding (the paper's stage 1: alignment is left to stage 2); `none` drops the embedding term (maps and hidden
states only). `distill.cross_lingual`: a Chinese caption's embedding target is the teacher's embedding of the same
sample's English caption, for English-only teachers.

Unpaired data (`distill.unpaired_images`, `distill.text_only`) needs no special case: an image-only row has no
caption (masked out of the text terms by `has_en` / `has_zh`, as ever), and a text-only row has no image (masked out
of every image term by `batch.has_image`: the image terms see only the rows that have one).

Targets come from a `Targets` source: the teacher itself (`OnlineTargets`), or a teacher-feature cache that holds
them for K views of every sample, so stage 1 can train with no teacher in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import UserError
from compress.model import DualEncoder
from compress.recipe.schema import DistillConfig
from compress.teachers.base import ImageFeatures, Teacher, TextFeatures
from compress.teachers.reference import text_features_with_taps
from compress.train.data import Batch, trim_padding
from compress.train.losses import FeatureDistillLoss
from compress.train.loop import param_groups


@dataclass
class TargetShapes:
    embed_dim: int
    map_channels: list[int]
    hidden_dim: int | None
    text_layer_dims: list[int] = field(default_factory=list)  # one per teacher.text_layers tap (empty: unset)


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
        taps = [int(t.shape[-1]) for t in probe.layers]
        self.shapes = TargetShapes(int(teacher.embed_dim), list(teacher.map_channels), hidden, taps)

    def image(self, batch: Batch) -> ImageFeatures:
        pixels = batch.teacher_pixels if batch.teacher_pixels is not None else batch.pixels
        with torch.no_grad():
            return self.teacher.encode_image(pixels)

    def text(self, batch: Batch) -> TextFeatures:
        with torch.no_grad():
            return self.teacher.encode_text(present_captions(batch))


def student_text_taps(num_student_blocks: int, num_taps: int) -> list[int]:
    """The student text blocks matched to `num_taps` teacher taps, shallow to deep: evenly spaced and ending with the
    last block, block floor(L * (j + 1) / k) - 1 for tap j of k on an L-block student (2 taps on 2 blocks: 0, 1;
    2 on 4: 1, 3; 3 on 6: 1, 3, 5). The i-th shallowest teacher tap trains the i-th shallowest student tap.
    More taps than student blocks is a UserError."""
    if num_taps > num_student_blocks:
        raise UserError(
            f"teacher.text_layers: {num_taps} teacher taps but the student's text tower has {num_student_blocks} "
            f"block(s); list at most {num_student_blocks} (each tap needs its own student block)"
        )
    return [num_student_blocks * (j + 1) // num_taps - 1 for j in range(num_taps)]


def cross_lingual_rows(has_en: torch.Tensor, has_zh: torch.Tensor) -> torch.Tensor:
    """For each present caption (`present_captions` order: the English ones, then the Chinese ones) the row, in the
    same order, whose teacher embedding is its target under `distill.cross_lingual`: an English caption its own, a
    Chinese caption its sample's English caption's; -1 where the sample has no English caption (no target)."""
    has_en, has_zh = has_en.bool(), has_zh.bool()
    en_row = torch.cumsum(has_en.long(), 0) - 1  # a sample's row among the English captions present
    own = torch.arange(int(has_en.sum()), device=has_en.device)
    zh = torch.where(has_en[has_zh], en_row[has_zh], torch.full_like(en_row[has_zh], -1))
    return torch.cat([own, zh])


class Adapters(nn.Module):
    """Student -> teacher feature adapters; trained with the student and thrown away after stage 1.

    `embed_adapter`: `shared` (one `embed` for both towers), `per_tower` (`image_embed`, `text_embed`) or `none`."""

    def __init__(self, student: DualEncoder, shapes: TargetShapes, embed_adapter: str = "shared") -> None:
        super().__init__()
        self.embed_adapter = embed_adapter
        pairs = list(zip(student.image.map_channels[::-1], shapes.map_channels[::-1]))[::-1]
        self.maps = nn.ModuleList([nn.Conv2d(s, t, kernel_size=1) for s, t in pairs])
        if embed_adapter == "shared":  # created here, in this order: the default draws what it always drew
            self.embed = nn.Linear(student.spec.embed_dim, shapes.embed_dim)
        elif embed_adapter == "per_tower":
            self.image_embed = nn.Linear(student.spec.embed_dim, shapes.embed_dim)
            self.text_embed = nn.Linear(student.spec.embed_dim, shapes.embed_dim)
        elif embed_adapter != "none":
            raise ValueError(f"distill.embed_adapter: {embed_adapter!r} is not shared, per_tower or none")
        self.hidden = nn.Linear(student.text.width, shapes.hidden_dim) if shapes.hidden_dim else None
        self.text_taps = nn.ModuleList([nn.Linear(student.text.width, d) for d in shapes.text_layer_dims])

    def embed_for(self, tower: str) -> nn.Module | None:
        """The adapter from tower `tower`'s (image or text) final embedding onto the teacher's; None: no such term."""
        if self.embed_adapter == "shared":
            return self.embed
        if self.embed_adapter == "per_tower":
            return self.image_embed if tower == "image" else self.text_embed
        return None


class DistillStage(nn.Module):
    name = "distill"
    description = "stage 1: distill"

    def __init__(self, student: DualEncoder, targets: Targets, cfg: DistillConfig, seed: int = 0) -> None:
        super().__init__()
        self.image, self.text = student.image, student.text  # the towers only: the temperature is stage 2's
        shapes = targets.shapes
        # the student blocks that learn teacher.text_layers (an empty list: no taps)
        self.text_blocks = student_text_taps(len(student.text.blocks), len(shapes.text_layer_dims))
        torch.manual_seed(seed)
        self.adapters = Adapters(student, shapes, cfg.embed_adapter)
        if cfg.embed_adapter == "none" and not (len(self.adapters.maps) or shapes.hidden_dim or shapes.text_layer_dims):
            raise UserError("distill.embed_adapter 'none' leaves stage 1 nothing to distil: the teacher gives no feature "
                            "maps and no text hidden states (teacher.map_layers / text_layers are empty); use "
                            "embed_adapter shared or per_tower, or give the teacher some taps")
        self.targets, self.cfg, self.crit = targets, cfg, FeatureDistillLoss()
        self.train()

    def param_groups(self) -> list[dict]:
        return param_groups(self.parameters(), self.cfg.lr, self.cfg.weight_decay)

    def after_step(self) -> None:
        pass

    def text_embedding_targets(self, batch: Batch, t_txt: TextFeatures) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The text embedding term's targets, one row per present caption (`present_captions` order) it keeps, and
        which rows it keeps (None: all of them). `distill.cross_lingual`: a Chinese caption's target is its sample's
        English caption's teacher embedding, and a Chinese caption whose sample has no English one is dropped."""
        target = t_txt.embedding.to(batch.pixels.device)
        if not self.cfg.cross_lingual:
            return None, target
        src = cross_lingual_rows(batch.has_en, batch.has_zh).to(target.device)
        keep = src >= 0
        return keep, target[src[keep]]

    def image_rows(self, batch: Batch) -> Batch | None:
        """The rows the image terms use: all of them (today), those with an image when the batch holds text-only
        rows (`batch.has_image`), or None when no row has one."""
        if batch.has_image is None or bool(batch.has_image.all()):
            return batch
        return batch.rows(batch.has_image) if bool(batch.has_image.any()) else None

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, crit, dev = self.cfg, self.crit, batch.pixels.device
        loss, parts, s_emb = 0.0, {}, None
        images = self.image_rows(batch)  # text-only rows (distill.text_only) never reach an image term
        if images is not None:
            t_img = self.targets.image(images)
            s_emb, s_maps = self.image.forward_features(images.pixels)
            n = len(self.adapters.maps)
            t_maps = [m.to(dev) for m in t_img.maps[-n:]] if n else []
            if getattr(self.targets, "pooled_maps", False):  # a cache of pooled maps: pool the student's the same way
                s_maps = [F.adaptive_avg_pool2d(s, t.shape[-2:]) for s, t in zip(s_maps[-n:], t_maps)] if n else []
            map_loss = sum(crit(a(s), t) for a, s, t in zip(self.adapters.maps, s_maps[-n:], t_maps)) / max(1, n)
            loss = cfg.map_weight * map_loss
            parts = {"maps": torch.as_tensor(map_loss).detach()}
            image_adapter = self.adapters.embed_for("image")
            if image_adapter is not None:
                img_emb = crit(image_adapter(s_emb), t_img.embedding.to(dev))
                loss = loss + cfg.embed_weight * img_emb
                parts["image_embed"] = img_emb.detach()
        ids = torch.cat([batch.en_ids[batch.has_en], batch.zh_ids[batch.has_zh]])
        if len(ids):
            t_txt = self.targets.text(batch)
            if self.text_blocks:
                s_txt, s_hidden, s_taps = text_features_with_taps(self.text, trim_padding(ids), self.text_blocks)
            else:
                s_txt, s_hidden = self.text.forward_features(trim_padding(ids))
                s_taps = []
            text_adapter = self.adapters.embed_for("text")
            if text_adapter is not None:
                keep, target = self.text_embedding_targets(batch, t_txt)
                if keep is None or keep.any():
                    txt = crit(text_adapter(s_txt if keep is None else s_txt[keep]), target)
                    loss = loss + cfg.embed_weight * txt
                    parts["text_embed"] = txt.detach()
            # Hidden-state targets are the teacher's own encoding of each caption; cross-lingual skips the Chinese
            # ones (an English-only teacher's states of a Chinese caption are what it is not trusted with).
            own = slice(0, int(batch.has_en.sum())) if cfg.cross_lingual else slice(None)
            if own.stop == 0:  # cross-lingual, and no English caption in this batch: no hidden-state rows
                pass
            elif self.adapters.hidden is not None and t_txt.hidden is not None:
                hid = crit(self.adapters.hidden(s_hidden[own]), t_txt.hidden[own].to(dev))
                loss = loss + cfg.hidden_weight * hid
                parts["text_hidden"] = hid.detach()
            elif len(self.adapters.text_taps) and t_txt.layers:
                terms = [crit(a(s[own]), t[own].to(dev)) for a, s, t in zip(self.adapters.text_taps, s_taps, t_txt.layers)]
                loss = loss + cfg.hidden_weight * (sum(terms) / len(terms))
                parts.update({f"text_hidden_{j}": term.detach() for j, term in enumerate(terms)})
        if not (torch.is_tensor(loss) and loss.requires_grad):  # no term in this batch: a zero that still backprops
            loss = loss + 0.0 * (s_emb.sum() if s_emb is not None else next(self.parameters()).sum())
        return loss, parts
