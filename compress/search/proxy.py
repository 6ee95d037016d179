"""Accuracy proxy: a short stage-1 distillation from the recipe's teacher, scored zero-shot in English and Chinese on a
held-out part of the recipe's own training data; successive halving gives the survivors more steps.

The held-out part is one sample of each of `holdout` seeded groups (an unseen render of a seen class, for emoji), so
the proxy never scores on what it trained on and never touches the eval splits the final report uses. Scores are
taken in the teacher's embedding space (student embedding -> the stage's shared embedding adapter), which is what
stage 1 trains; the same DistillStage and training loop as a run, only shorter.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from compress.data.augment import to_float
from compress.data.pairs import PairSet
from compress.data.store import LazyImages, select_images
from compress.model import DualEncoder, DualEncoderSpec
from compress.prompts import eval_prompts
from compress.recipe.schema import Recipe
from compress.tokenizer import BilingualTokenizer
from compress.train import loop
from compress.train.distill import DistillStage, OnlineTargets
from students.spaces import ImageCandidate, TextCandidate


@dataclass
class Holdout:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    groups: list[int]  # the group of each image; also the class set scored against
    names: dict[str, list[str | None]]  # lang -> name/caption per group (None: no text in that language)
    templated: bool


def split_holdout(pairs: PairSet, n: int, seed: int) -> tuple[PairSet, Holdout]:
    """Hold out one sample of each of n seeded groups that have 2+ samples (or of any group if none has)."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(pairs.groups.tolist()):
        members.setdefault(g, []).append(i)
    rng = random.Random(seed)
    multi = [g for g, m in sorted(members.items()) if len(m) > 1] or sorted(members)
    chosen = sorted(rng.sample(multi, min(n, len(multi))))
    held = [rng.choice(members[g]) for g in chosen]
    keep = torch.ones(len(pairs), dtype=torch.bool)
    keep[held] = False
    train = PairSet(select_images(pairs.images, keep), pairs.groups[keep], pairs.en, pairs.zh, pairs.templated, pairs.more)
    names = {lang: [(pairs.en if lang == "en" else pairs.zh)[g] for g in chosen] for lang in ("en", "zh")}
    return train, Holdout(pairs.images[held], chosen, names, pairs.templated)


def resized(pairs: PairSet, size: int) -> PairSet:
    """The same pairs at another square resolution (antialiased bilinear), for candidates of another input size."""
    if pairs.images.shape[-1] == size:
        return pairs
    if isinstance(pairs.images, LazyImages):  # a corpus on disk: decode at the new size instead
        return PairSet(pairs.images.at_size(size), pairs.groups, pairs.en, pairs.zh, pairs.templated, pairs.more)
    img = F.interpolate(pairs.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    img = img.round().clamp(0, 255).to(torch.uint8)
    return PairSet(img, pairs.groups, pairs.en, pairs.zh, pairs.templated, pairs.more)


@torch.no_grad()
def score(stage: DistillStage, tokenizer: BilingualTokenizer, held: Holdout, batch_size: int = 256) -> dict[str, float]:
    """Zero-shot top-1 per language over the held-out groups, in the adapter (teacher) space."""
    stage.eval()
    images = held.images
    if images.shape[-1] != stage.image.image_size:
        images = resized(PairSet(images, torch.zeros(len(images), dtype=torch.long), [], []), stage.image.image_size).images
    embed = stage.adapters.embed
    img = torch.cat([embed(stage.image(to_float(images[i:i + batch_size]))) for i in range(0, len(images), batch_size)])
    img = F.normalize(img, dim=-1)
    out: dict[str, float] = {}
    for lang, names in held.names.items():
        rows = [i for i, n in enumerate(names) if n is not None]
        if not rows:
            continue
        texts = [names[i] for i in rows]
        prompts = eval_prompts(texts, lang) if held.templated else texts
        txt = torch.cat([embed(stage.text(tokenizer(prompts[i:i + batch_size]))) for i in range(0, len(prompts), batch_size)])
        logits = img[rows] @ F.normalize(txt, dim=-1).t()
        out[lang] = round(float((logits.argmax(dim=1) == torch.arange(len(rows))).float().mean()), 4)
    stage.train()
    return out


def mean_top1(top1: dict[str, float] | None) -> float:
    return sum(top1.values()) / len(top1) if top1 else -1.0


@dataclass
class ProxyTrainer:
    """Trains (image, text) candidate pairs for a given number of stage-1 steps and keeps them for the next rung."""

    recipe: Recipe
    train: PairSet
    held: Holdout
    targets: OnlineTargets
    tokenizer_for: Callable[[int], BilingualTokenizer]  # context length -> tokenizer
    steps_done: dict[str, int] = field(default_factory=dict)
    stages: dict[str, DistillStage] = field(default_factory=dict)
    seconds: float = 0.0
    total_steps: int = 0
    _sized: dict[int, PairSet] = field(default_factory=dict)

    def steps_per_epoch(self, batch_size: int) -> int:
        micro = loop.micro_batch_size(batch_size, 1, 1, self.train.num_groups)
        return max(1, self.train.num_groups // micro)

    def _pairs(self, size: int) -> PairSet:
        if size not in self._sized:
            self._sized[size] = resized(self.train, size)
        return self._sized[size]

    def _stage(self, key: str, image: ImageCandidate | None, text: TextCandidate | None) -> DistillStage:
        if key not in self.stages:
            r = self.recipe
            s = r.students
            ctx_len = text.context_length if text else s.text.context_length
            tok = self.tokenizer_for(ctx_len)
            # A tower still to be searched trains as a registered stand-in meanwhile (image is searched first).
            text_arch = text.name() if text else (s.text.arch if s.text.arch != "search" else "text_tiny")
            image_arch = image.name() if image else (s.image.arch if s.image.arch != "search" else "mobilevit_xxs")
            spec = DualEncoderSpec(
                image_arch=image_arch, text_arch=text_arch,
                embed_dim=s.embed_dim, image_size=image.image_size if image else r.data.image_size,
                context_length=ctx_len, vocab_size=tok.vocab_size,
                image_spec=image.spec() if image else s.image.spec, text_spec=text.spec() if text else s.text.spec,
            )
            torch.manual_seed(r.search.seed)
            model = DualEncoder(spec)
            self.stages[key] = DistillStage(model, self.targets, r.distill, seed=r.search.seed)
        return self.stages[key]

    def train_to(self, key: str, image: ImageCandidate | None, text: TextCandidate | None, steps: int) -> dict[str, float]:
        """Continue `key`'s student until it has had at least `steps` steps (whole epochs), then score it."""
        import time

        stage = self._stage(key, image, text)
        p = self.recipe.search.proxy
        per_epoch = self.steps_per_epoch(p.batch_size)
        todo = steps - self.steps_done.get(key, 0)
        if todo > 0:
            epochs = math.ceil(todo / per_epoch)
            cfg = self.recipe.distill.model_copy(update={"epochs": epochs, "batch_size": p.batch_size, "grad_accum": 1})
            rung_seed = self.recipe.search.seed + 1000 * (self.steps_done.get(key, 0) + 1)
            ctx = loop.LoopContext(None, rung_seed, self.recipe.training, distributed=False)
            ctx.training = ctx.training.model_copy(update={"tensorboard": False})
            pairs = self._pairs(stage.image.image_size)
            ctx_len = stage.text.context_length
            start = time.perf_counter()
            hist = loop.train(stage, pairs, self.tokenizer_for(ctx_len), cfg, ctx)
            self.seconds += time.perf_counter() - start
            self.total_steps += hist.steps
            self.steps_done[key] = self.steps_done.get(key, 0) + hist.steps
        return score(stage, self.tokenizer_for(stage.text.context_length), self.held)

    def drop(self, key: str) -> None:
        self.stages.pop(key, None)


def halving_rungs(n: int, steps: int, eta: int) -> list[tuple[int, int]]:
    """[(candidates, cumulative steps)] per rung: n at `steps`, then ceil(n/eta) at eta x steps, ... down to 1."""
    rungs = [(n, steps)]
    while rungs[-1][0] > 1:
        k, s = rungs[-1]
        rungs.append((math.ceil(k / eta), s * eta))
    return rungs
