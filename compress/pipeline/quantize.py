"""The QAT stage: the recipe's quantization schemes (`qat.scheme` first, then `qat.compare`), each on copies of the
fp32 towers, on the main process alone (a captured graph is not wrapped for data parallelism)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from compress.model import DualEncoder, example_inputs
from compress.pipeline.data import RunData
from compress.pipeline.state import RunState, loop_context
from compress.progress import log
from compress.quant.calibrate import calibration_set, observe
from compress.quant.schemes import get_scheme
from compress.tokenizer import BilingualTokenizer
from compress.train import loop
from compress.train.align import AlignStage


@dataclass
class Quantized:
    image: nn.Module
    text: nn.Module
    config: dict


def _calibrate(scheme, image: nn.Module, text: nn.Module, data: RunData, tokenizer: BilingualTokenizer) -> None:
    """The run's calibration batches through both prepared towers in eval form (observers record, nothing trains)."""
    scheme.set_train(image, False)
    scheme.set_train(text, False)
    cal = calibration_set(data.train, tokenizer)
    observe(image, cal.image)
    observe(text, cal.text)


def _quantize_scheme(state: RunState, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer, name: str,
                     headline: bool) -> Quantized:
    """prepare -> QAT (the recipe's qat settings) or calibration -> convert, for one scheme, on copies of the towers."""
    recipe, scheme = state.recipe, get_scheme(name)
    stage_name = "qat" if headline else f"qat-{name}"
    ex_img, ex_txt = example_inputs(model, 2)
    ctx = loop_context(state, 2, distributed=False)  # every scheme sees the same seed and batch order
    image = scheme.prepare(copy.deepcopy(model.image), ex_img)
    text = scheme.prepare(copy.deepcopy(model.text), ex_txt)
    if scheme.trains and recipe.qat.epochs > 0:
        if recipe.qat.calibrate and scheme.calibrated_by:
            ptq = get_scheme(scheme.calibrated_by)
            c_img, c_txt = ptq.prepare(copy.deepcopy(model.image), ex_img), ptq.prepare(copy.deepcopy(model.text), ex_txt)
            _calibrate(ptq, c_img, c_txt, data, tokenizer)
            frozen = scheme.seed_activation_ranges(image, c_img) + scheme.seed_activation_ranges(text, c_txt)
            log(f"{stage_name}: started from {scheme.calibrated_by}'s activation ranges ({frozen} frozen)")
        scheme.set_train(image, True)
        scheme.set_train(text, True)
        logit_scale = nn.Parameter(model.logit_scale.detach().clone())
        cfg = recipe.align.model_copy(update={
            "epochs": recipe.qat.epochs, "batch_size": recipe.qat.batch_size, "lr": recipe.qat.lr,
            "weight_decay": recipe.qat.weight_decay, "warmup": recipe.qat.warmup, "grad_accum": recipe.qat.grad_accum,
            "clip_grad_norm": recipe.qat.clip_grad_norm, "image_lr_scale": 1.0, "affinity_weight": 0.0,
        })
        reference = (tuple(copy.deepcopy(m).eval().requires_grad_(False) for m in (model.image, model.text))
                     if recipe.qat.self_distill > 0 else None)
        stage = AlignStage(image, text, logit_scale, cfg, trim_text=False, name=stage_name,
                           description=f"QAT ({name} fake-quant)", reference=reference,
                           reference_weight=recipe.qat.self_distill, contrastive_weight=recipe.qat.contrastive)
        hist = loop.train(stage, data.train, tokenizer, cfg, ctx)
        state.history[stage_name] = hist.as_dict()
        loop.clear_checkpoints(state.out, stage_name)
    if scheme.calibrates:
        _calibrate(scheme, image, text, data, tokenizer)
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
            result[name] = _quantize_scheme(state, data, model, tokenizer, name, headline=i == 0)
    return result
