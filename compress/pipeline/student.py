"""Stages 1 and 2: tokenizer -> student -> stage 1 distill (artifact: student_distill/) -> stage 2 align
(student_fp32/). Each finished stage leaves its artifact; `--resume` skips a stage whose artifact is there and
continues an unfinished one from its newest mid-stage checkpoint."""
from __future__ import annotations

import copy

import torch

from compress.data.pairs import PairSet
from compress.model import DualEncoder, DualEncoderSpec, load_checkpoint, save_checkpoint
from compress.pipeline.data import RunData, pseudo_labelled, with_unpaired
from compress.pipeline.state import RunState, loop_context
from compress.progress import log
from compress.recipe.schema import Recipe
from compress.teachers.base import Teacher
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer, vocabulary_sample
from compress.train import loop
from compress.train.align import AlignStage
from compress.train.distill import DistillStage, OnlineTargets


def build_student(recipe: Recipe, tokenizer: BilingualTokenizer) -> DualEncoder:
    s = recipe.students
    spec = DualEncoderSpec(
        image_arch=s.image.arch, text_arch=s.text.arch, embed_dim=s.embed_dim, image_size=recipe.data.image_size,
        context_length=s.text.context_length, vocab_size=tokenizer.vocab_size,
        image_spec=s.image.spec, text_spec=s.text.spec,  # arch: custom (a searched architecture)
    )
    torch.manual_seed(recipe.seed)
    return DualEncoder(spec, init_temperature=recipe.align.init_temperature)


def run_tokenizer(recipe: Recipe, stage1: PairSet) -> BilingualTokenizer:
    """The student's tokenizer: WordPiece over every caption stage 1 can produce, or an even sample of them for a
    large corpus (`vocabulary_sample`); a pure function of the recipe and the data, so `cache-teacher` builds the very
    same one to cut the teacher's captions."""
    t = recipe.students.text
    texts = vocabulary_sample(tokenizer_corpus(stage1), t.vocab_size)
    return BilingualTokenizer(train_tokenizer(texts, t.vocab_size, t.inventory), t.context_length)


def stage1_targets(recipe: Recipe, data: RunData, teacher: Teacher | None, tokenizer: BilingualTokenizer | None = None):
    """Stage-1 targets: read from the teacher-feature cache when the recipe names one (no teacher in memory),
    else computed by the teacher on every batch."""
    if recipe.teacher.cache is None:
        return OnlineTargets(teacher)
    from compress.train.feature_cache import CachedTargets, cache_fingerprint

    log(f"stage 1: teacher targets from the cache {recipe.teacher.cache}")
    return CachedTargets(recipe.teacher.cache, cache_fingerprint(recipe, data.train, tokenizer=tokenizer))


def frozen_towers(model: DualEncoder) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Eval-mode, gradient-free copies of the student's towers as they are now (stage 2's `align.retain` anchor)."""
    copies = tuple(copy.deepcopy(t).eval().requires_grad_(False) for t in (model.image, model.text))
    return copies[0], copies[1]


def checkpoint_meta(state: RunState) -> dict:
    """What a checkpoint records besides its weights: the training history, and the data it trained on (so that
    `export` of a bare checkpoint can calibrate int8 on the same data)."""
    recipe = state.recipe
    return {"history": state.history, "recipe": recipe.name, "data": recipe.data.model_dump(mode="json"),
            "seed": recipe.seed}


def train_fp32(state: RunState, data: RunData, teacher: Teacher | None) -> tuple[DualEncoder, BilingualTokenizer]:
    recipe, out = state.recipe, state.out
    final = out / "student_fp32"
    if state.resume and (final / "model.json").is_file():  # model.json is written last: the folder is complete
        log(f"resume: loading {final}")
        model, tokenizer, meta = load_checkpoint(final)
        state.history.update(meta.get("history", {}))
        return model, tokenizer
    full = with_unpaired(recipe, data)  # + distill.unpaired_images / text_only: read once, for stage 1 and stage 2
    distilled = out / "student_distill"
    if state.resume and (distilled / "model.json").is_file():
        log(f"resume: loading {distilled}")
        model, tokenizer, meta = load_checkpoint(distilled)
        state.history.update(meta.get("history", {}))
    else:
        stage1 = full.stage1  # the pairs, plus distill.unpaired_images / text_only rows
        with state.stage("tokenizer"):
            tokenizer = run_tokenizer(recipe, stage1)
        model = build_student(recipe, tokenizer)
        cached = recipe.teacher.cache is not None
        if recipe.distill.enabled and (teacher is not None or cached) and recipe.distill.epochs > 0:
            with state.stage("distill"):
                ctx = loop_context(state, 0)
                targets = stage1_targets(recipe, data, teacher, tokenizer)
                ctx.views = getattr(targets, "views", None)  # a K-view cache: the plan draws views from range(K)
                ctx.teacher_input = getattr(teacher, "train_input", None) if not cached else None
                stage = DistillStage(model, targets, recipe.distill, seed=recipe.seed)
                hist = loop.train(stage, stage1, tokenizer, recipe.distill, ctx)  # stage 2 below: pairs only
                model.eval()
                state.history["distill"] = hist.as_dict()
                if loop.is_main_process():
                    save_checkpoint(model, tokenizer, distilled, {"history": state.history})
                loop.clear_checkpoints(out, stage.name)
    if recipe.align.enabled and recipe.align.epochs > 0:
        with state.stage("align"):
            ctx = loop_context(state, 1)
            model.train()
            pairs, reference = data.train, None
            if recipe.align.retain > 0:  # stage 1's rows, each tower anchored to its frozen stage-1 self
                pairs, reference = full.stage1, frozen_towers(model)
            if recipe.align.pseudo_label:  # the pairs plus K's images captioned by the teacher's guess
                pairs, info = pseudo_labelled(recipe, full, teacher)
                state.history["pseudo_label"] = info
                log("pseudo-labels: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in info.items()))
            stage = AlignStage(model.image, model.text, model.logit_scale, recipe.align, teacher=teacher,
                               reference=reference, reference_weight=recipe.align.retain)
            if recipe.align.affinity_weight > 0:  # the teacher scores its own view of each crop
                ctx.teacher_input = getattr(teacher, "train_input", None)
            hist = loop.train(stage, pairs, tokenizer, recipe.align, ctx)
            model.eval()
            state.history["align"] = hist.as_dict()
    if loop.is_main_process():
        save_checkpoint(model, tokenizer, final, checkpoint_meta(state))
        loop.clear_checkpoints(out, "align")
    return model.eval(), tokenizer
