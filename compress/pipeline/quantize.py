"""The QAT stage: the recipe's quantization schemes (`qat.scheme` first, then `qat.compare`), each on copies of the
fp32 towers, on the main process alone (a captured graph is not wrapped for data parallelism).

Every post-training calibration here (ptq-int8, ft-ptq-int8, and `qat.calibrate`'s seed ranges) uses the recipe's
`qat.ptq_*` settings (`ptq_settings`). `ft-ptq-int8` fine-tunes eager fp32 copies with exactly QAT's loop (the same
`loop_context`, AlignStage settings and losses), then quantizes them post-training: QAT's baseline at equal training.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from compress.model import DualEncoder, example_inputs
from compress.pipeline.data import RunData
from compress.pipeline.state import RunState, loop_context
from compress.progress import log
from compress.quant.calibrate import calibration_set, observe
from compress.quant.schemes import PTQSettings, Scheme, get_scheme, ptq_settings, train_keeping_batchnorm
from compress.recipe.schema import AlignConfig, Recipe
from compress.tokenizer import BilingualTokenizer
from compress.train import loop
from compress.train.align import AlignStage


@dataclass
class Quantized:
    image: nn.Module
    text: nn.Module
    config: dict


def _calibrate(scheme: Scheme, image: nn.Module, text: nn.Module, data: RunData, tokenizer: BilingualTokenizer,
               batches: int) -> None:
    """The run's calibration batches through both prepared towers in eval form (observers record, nothing trains)."""
    scheme.set_train(image, False)
    scheme.set_train(text, False)
    cal = calibration_set(data.train, tokenizer, batches)
    observe(image, cal.image)
    observe(text, cal.text)


def post_training(scheme: Scheme, image: nn.Module, text: nn.Module, model: DualEncoder, data: RunData,
                  tokenizer: BilingualTokenizer, ptq: PTQSettings) -> Quantized:
    """prepare -> calibration on the run's training rows -> convert of eager (fp32) towers, with `ptq`'s settings:
    the ptq-int8 path, for the fp32 student or for towers fine-tuned first (ft-ptq-int8). Prepares copies."""
    scheme = scheme.with_ptq(ptq)
    ex_img, ex_txt = example_inputs(model, 2)
    p_img = scheme.prepare(copy.deepcopy(image).cpu().eval(), ex_img)
    p_txt = scheme.prepare(copy.deepcopy(text).cpu().eval(), ex_txt)
    _calibrate(scheme, p_img, p_txt, data, tokenizer, ptq.batches)
    return Quantized(scheme.convert(p_img), scheme.convert(p_txt), scheme.config())


def qat_align_config(recipe: Recipe) -> AlignConfig:
    """The AlignStage settings of QAT (and of ft-ptq-int8's fine-tune): the recipe's align section with qat's
    optimisation keys."""
    return recipe.align.model_copy(update={
        "epochs": recipe.qat.epochs, "batch_size": recipe.qat.batch_size, "lr": recipe.qat.lr,
        "weight_decay": recipe.qat.weight_decay, "warmup": recipe.qat.warmup, "grad_accum": recipe.qat.grad_accum,
        "clip_grad_norm": recipe.qat.clip_grad_norm, "image_lr_scale": 1.0, "affinity_weight": 0.0,
    })


def _fine_tune(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer, image: nn.Module,
               text: nn.Module, ctx: loop.LoopContext, stage_name: str, description: str) -> None:
    """QAT's training of (image, text), in place: contrastive * qat.contrastive + qat.self_distill * the cosine
    distance to the frozen fp32 student, for qat.epochs. One function for the fake-quant graphs and the eager fp32
    copies of ft-ptq-int8, so both see the same settings, seed and batch order; the caller sets train form."""
    recipe = state.recipe
    logit_scale = nn.Parameter(model.logit_scale.detach().clone())
    cfg = qat_align_config(recipe)
    reference = (tuple(copy.deepcopy(m).eval().requires_grad_(False) for m in (model.image, model.text))
                 if recipe.qat.self_distill > 0 else None)
    stage = AlignStage(image, text, logit_scale, cfg, trim_text=False, name=stage_name, description=description,
                       reference=reference, reference_weight=recipe.qat.self_distill,
                       contrastive_weight=recipe.qat.contrastive)
    hist = loop.train(stage, data.train, tokenizer, cfg, ctx)
    state.history[stage_name] = hist.as_dict()
    loop.clear_checkpoints(state.out, stage_name)


def fine_tune_fp32(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer,
                   stage_name: str, description: str = "fp32 fine-tune like QAT") -> tuple[nn.Module, nn.Module]:
    """Eager fp32 copies of the towers fine-tuned with exactly QAT's loop (`loop_context(state, 2)`: its seed and
    batch order; `_fine_tune`: its settings and losses), BatchNorm at its running statistics as QAT's folded graph
    keeps it, no fake-quant; returned on the CPU in eval form. qat.epochs 0: untouched copies."""
    ctx = loop_context(state, 2, distributed=False)
    image, text = copy.deepcopy(model.image), copy.deepcopy(model.text)
    if state.recipe.qat.epochs > 0:
        train_keeping_batchnorm(image, True)
        train_keeping_batchnorm(text, True)
        _fine_tune(state, data, model, tokenizer, image, text, ctx, stage_name, description)
    return image.cpu().eval(), text.cpu().eval()


def _fine_tune_then_ptq(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer,
                        scheme: Scheme, stage_name: str) -> Quantized:
    """ft-ptq-int8: `fine_tune_fp32`, then `scheme.then` post-training on the fine-tuned towers. `scheme` carries
    the recipe's PTQ settings (`with_ptq`): QAT's baseline at equal training."""
    image, text = fine_tune_fp32(state, data, model, tokenizer, stage_name, f"fp32 fine-tune like QAT, then {scheme.then}")
    result = post_training(get_scheme(scheme.then), image, text, model, data, tokenizer, scheme.ptq)
    return Quantized(result.image, result.text, scheme.config())


def quantize_scheme(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer, name: str,
                    headline: bool) -> Quantized:
    """prepare -> QAT (the recipe's qat settings) or calibration -> convert, for one scheme, on copies of the towers;
    or, for a scheme with `then` (ft-ptq-int8), the fp32 fine-tune and that post-training scheme."""
    recipe, ptq = state.recipe, ptq_settings(state.recipe.qat)
    scheme = get_scheme(name).with_ptq(ptq)
    stage_name = "qat" if headline else f"qat-{name}"
    if scheme.then is not None:
        return _fine_tune_then_ptq(state, data, model, tokenizer, scheme, stage_name)
    ex_img, ex_txt = example_inputs(model, 2)
    ctx = loop_context(state, 2, distributed=False)  # every scheme sees the same seed and batch order
    image = scheme.prepare(copy.deepcopy(model.image), ex_img)
    text = scheme.prepare(copy.deepcopy(model.text), ex_txt)
    if scheme.trains and recipe.qat.epochs > 0:
        if recipe.qat.calibrate and scheme.calibrated_by:
            seed = get_scheme(scheme.calibrated_by).with_ptq(ptq)
            c_img, c_txt = seed.prepare(copy.deepcopy(model.image), ex_img), seed.prepare(copy.deepcopy(model.text), ex_txt)
            _calibrate(seed, c_img, c_txt, data, tokenizer, ptq.batches)
            frozen = scheme.seed_activation_ranges(image, c_img) + scheme.seed_activation_ranges(text, c_txt)
            log(f"{stage_name}: started from {scheme.calibrated_by}'s activation ranges ({frozen} frozen)")
        scheme.set_train(image, True)
        scheme.set_train(text, True)
        _fine_tune(state, data, model, tokenizer, image, text, ctx, stage_name, f"QAT ({name} fake-quant)")
    if scheme.calibrates:
        _calibrate(scheme, image, text, data, tokenizer, ptq.batches)
    scheme.set_train(image, False)
    scheme.set_train(text, False)
    return Quantized(scheme.convert(image.cpu()), scheme.convert(text.cpu()), scheme.config())


def quantize(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer) -> dict[str, Quantized]:
    """{} when QAT is off or no quantized export is asked for."""
    recipe = state.recipe
    if not recipe.qat.enabled or "int8" not in recipe.export.quant:
        return {}
    result: dict[str, Quantized] = {}
    model = model.cpu().eval()
    for i, name in enumerate(recipe.qat.schemes):
        with state.stage("qat" if i == 0 else f"qat-{name}"):
            result[name] = quantize_scheme(state, data, model, tokenizer, name, headline=i == 0)
    return result
