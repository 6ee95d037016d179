"""The reference teacher: a bilingual dual encoder trained from scratch on `emoji-zh-en` by recipes/emoji_teacher.yaml.

It is a checkpoint folder like any student's; this adapter gives it the `Teacher` interface.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from compress.model import DualEncoder, load_checkpoint
from compress.recipe import Recipe, load_recipe
from compress.teachers.base import ImageFeatures, TextFeatures
from compress.tokenizer import BilingualTokenizer

TEACHER_CACHE = Path(".cache/teachers")
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


def reference_recipe_for(recipe: Recipe) -> Recipe:
    """The reference teacher recipe that the student `recipe` trains against."""
    same_data = {k: getattr(recipe.data, k) for k in SHARED_DATA_KEYS}
    return reference_recipe(recipe.teacher.recipe, same_data, recipe.seed)


def reference_teacher_folder(teacher_recipe: Recipe) -> Path:
    """Where the trained reference teacher is cached: one folder per teacher recipe fingerprint."""
    return TEACHER_CACHE / f"{teacher_recipe.name}-{teacher_recipe.fingerprint()}"


def teacher_data_relation(recipe: Recipe) -> list[str]:
    """Why the student's emoji training data is not a strict subset of the reference teacher's ([] when it is)."""
    if recipe.teacher.kind != "reference" or recipe.data.kind != "emoji":
        return []
    from compress.data.emoji import check_train_subset

    keys = ("train_renders", "train_styles", "unseen_fraction", "limit")
    teacher = load_recipe(recipe.teacher.recipe).data
    student_args = {k: getattr(recipe.data, k) for k in keys} | {"seed": recipe.seed}
    teacher_args = {k: getattr(teacher, k) for k in keys} | {"seed": recipe.seed}
    teacher_args |= {k: student_args[k] for k in ("unseen_fraction", "limit")}  # forced onto the teacher
    return check_train_subset(student_args, teacher_args)


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
