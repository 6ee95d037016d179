"""The reference teacher: a bilingual dual encoder trained from scratch on `emoji-zh-en` by recipes/emoji_teacher.yaml.

It is a checkpoint folder like any student's; this adapter gives it the `Teacher` interface.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compress.home import cache_dir
from compress.model import DualEncoder, load_checkpoint
from compress.recipe import Recipe, load_recipe
from compress.teachers.base import ImageFeatures, TextFeatures, resolve_text_layers
from compress.tokenizer import BilingualTokenizer

# The teacher must never see the student run's unseen classes: it takes the student's class subset and held-out
# split (and the seed, which picks the unseen classes).
SHARED_DATA_KEYS = ("unseen_fraction", "limit", "cache_dir")


def reference_recipe(recipe_path: str, data_overrides: dict | None = None, seed: int | None = None) -> Recipe:
    """The reference teacher's recipe as a student run trains it: its own recipe with the run's data split forced."""
    teacher_recipe = load_recipe(recipe_path)
    if data_overrides:
        teacher_recipe = teacher_recipe.model_copy(update={"data": teacher_recipe.data.model_copy(update=data_overrides)})
    if seed is not None:  # the seed picks the unseen classes, so it must match the student run's
        teacher_recipe = teacher_recipe.model_copy(update={"seed": seed})
    return teacher_recipe


def shared_data(recipe: Recipe) -> dict:
    """The data keys a student run forces onto its reference teacher. In the S/K/U world (data.split_seed) the
    teacher takes the same class split and trains on the teacher's pairs (S and K)."""
    same = {k: getattr(recipe.data, k) for k in SHARED_DATA_KEYS}
    if recipe.data.split_seed is not None:
        same |= {"split_seed": recipe.data.split_seed, "student_fraction": recipe.data.student_fraction,
                 "pairs": "teacher"}
    return same


def teacher_seed(recipe: Recipe) -> int:
    """The reference teacher's seed for the student run `recipe`: its render seed (`DataConfig.render_seed`)."""
    return recipe.data.render_seed(recipe.seed)


def reference_recipe_for(recipe: Recipe) -> Recipe:
    """The reference teacher recipe that the student `recipe` trains against."""
    return reference_recipe(recipe.teacher.recipe, shared_data(recipe), teacher_seed(recipe))


def reference_teacher_folder(teacher_recipe: Recipe) -> Path:
    """Where the trained reference teacher is cached: one folder per teacher recipe fingerprint."""
    return cache_dir("teachers") / f"{teacher_recipe.name}-{teacher_recipe.fingerprint()}"


def teacher_data_relation(recipe: Recipe) -> list[str]:
    """Why the student's emoji training data is not a strict subset of the reference teacher's ([] when it is)."""
    if recipe.teacher.kind != "reference" or recipe.data.kind != "emoji":
        return []
    from compress.data.emoji import check_train_subset

    keys = ("train_renders", "train_styles", "unseen_fraction", "limit")
    teacher = load_recipe(recipe.teacher.recipe).data
    student_args = {k: getattr(recipe.data, k) for k in keys} | {"seed": teacher_seed(recipe)}
    teacher_args = {k: getattr(teacher, k) for k in keys} | {"seed": teacher_seed(recipe)}
    teacher_args |= {k: student_args[k] for k in ("unseen_fraction", "limit")}  # forced onto the teacher
    return check_train_subset(student_args, teacher_args)


@contextmanager
def tapped_text_blocks(tower: nn.Module, blocks: Sequence[int]) -> Iterator[list[torch.Tensor | None]]:
    """Slots filled, while a forward of the text tower `tower` (students/text.py TextTower) runs inside the block,
    with the outputs (B, L, width) of its blocks `blocks`, in the order given. Autograd flows through them."""
    slots: list[torch.Tensor | None] = [None] * len(blocks)

    def hook(index: int):
        def store(_module: nn.Module, _args: object, out: torch.Tensor) -> None:
            slots[index] = out

        return store

    handles = [tower.blocks[b].register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        yield slots
    finally:
        for handle in handles:
            handle.remove()


def pool_tokens(states: torch.Tensor, ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Masked mean over the non-pad tokens of (B, L, C) block outputs: the text tower's own pooling."""
    keep = (ids != pad_id).to(states.dtype)[..., None]
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def text_features_with_taps(tower: nn.Module, ids: torch.Tensor, blocks: Sequence[int]
                            ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A TextTower's (embedding, pooled hidden) plus the pooled outputs of its blocks `blocks`, in one forward."""
    with tapped_text_blocks(tower, blocks) as slots:
        emb, pooled = tower.forward_features(ids)
    return emb, pooled, [pool_tokens(s, ids, tower.pad_id) for s in slots]


class ReferenceTeacher:
    def __init__(self, model: DualEncoder, tokenizer: BilingualTokenizer, name: str = "reference",
                 text_layers: Sequence[int] | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.embed_dim = model.spec.embed_dim
        self.map_channels = list(model.image.map_channels)
        self.image_size = model.spec.image_size
        self.logit_scale = float(model.logit_scale.exp())
        # teacher.text_layers: blocks whose pooled (masked-mean) outputs are the text-hidden targets; None: the
        # pooled final state, as ever
        self.text_layers = resolve_text_layers(text_layers, len(model.text.blocks))

    @classmethod
    def from_folder(cls, folder: str | Path, text_layers: Sequence[int] | None = None) -> "ReferenceTeacher":
        model, tokenizer, _ = load_checkpoint(folder)
        return cls(model, tokenizer, name=f"reference:{Path(folder).name}", text_layers=text_layers)

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
        ids = self.tokenizer(texts).to(device)
        if self.text_layers is not None:
            emb, _, taps = text_features_with_taps(self.model.text, ids, self.text_layers)
            return TextFeatures(emb, None, taps)
        emb, hidden = self.model.text.forward_features(ids)
        return TextFeatures(emb, hidden)

    def num_params(self) -> int:
        return self.model.tower_params()
