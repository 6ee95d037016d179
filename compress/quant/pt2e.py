"""Int8 quantization-aware training with torchao PT2E and ExecuTorch's XNNPACK quantizer.

Flow: `prepare_qat` (export with a dynamic batch, fold BatchNorm, insert fake-quant) -> train the returned graph
module as usual (`set_train(gm, True)`) -> `convert_qat` (int8 q/dq graph that runs eagerly on the host) ->
`get_target("xnnpack").lower` (mobile_export.lower.targets). The quantizer itself (`make_quantizer`) is the XNNPACK
backend's: mobile_export/lower/xnnpack.py.

Why BatchNorm is folded before prepare: PT2E's QAT conv+BN simulation computes `conv(x, w * g) / g` with
`g = gamma / sqrt(running_var + eps)`. timm zero-initialises the last BN gamma of every residual bottleneck
(`zero_init_last`), so MobileViT has channels with `g == 0`: `0 / 0 = NaN` in the first forward, the NaN reaches the
moving-average observers, and the next forward computes a zero_point from NaN min/max ("`zero_point` must be between
`quant_min` and `quant_max`"). Folding BN into the conv (BN frozen at its running statistics, the usual recipe for a
short QAT fine-tune) removes the division, so a zero gamma is just a zero output channel, and its folded weights
still receive gradients.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.export import Dim
from torch.fx import GraphModule

from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationSpec
from torchao.quantization.pt2e.quantizer.embedding_quantizer import get_embedding_operators_config
from torchao.quantization.pt2e.utils import _fuse_conv_bn_  # what torchao's own prepare_pt2e (PTQ) folds BN with

# The XNNPACK quantizer (which ops, per-channel or per-tensor weights) belongs to its backend; this file is the flow.
from mobile_export.lower.capture import explicit_attention
from mobile_export.lower.xnnpack import (
    QUANTIZED_OPS,
    has_embedding,
    linear_per_channel,
    make_quantizer,
    xnnpack_config,
)

MAX_BATCH = 4096


def _dynamic_batch(example_inputs: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Mark dim 0 of every input as one shared dynamic batch. A batch-1 example is repeated to 2 rows, because
    torch.export specialises size-1 dims."""
    if example_inputs[0].shape[0] == 1:
        example_inputs = tuple(x.repeat(2, *([1] * (x.dim() - 1))) for x in example_inputs)
    batch = Dim("batch", min=1, max=MAX_BATCH)
    return example_inputs, tuple({0: batch} for _ in example_inputs)


def _capture(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> GraphModule:
    """Export `module` (in eval form) with a dynamic batch dim and fold BatchNorm into conv."""
    example_inputs, dynamic_shapes = _dynamic_batch(tuple(example_inputs))
    was_training = module.training
    module.eval()  # BN must be captured in inference form to be folded (see module docstring)
    try:
        with explicit_attention(module):  # the same attention graph as the fp32 `.pte` (see explicit_attention)
            gm = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes).module()
    finally:
        module.train(was_training)
    _fuse_conv_bn_(gm)
    strip_dropout(gm)
    return gm


def strip_dropout(gm: GraphModule) -> int:
    """Remove the dropout nodes of an eval-form captured graph (identities there); returns how many.

    Why: torchao's `move_exported_model_to_train` (our `set_train(gm, True)`) rewrites dropout by pattern with
    `ignore_literals=True`, so EVERY dropout comes back as `dropout(p=0.5, train=True)`, whatever its p was. timm's
    MobileViT has 37 `Dropout(p=0.0)` modules (attention, projections, MLPs): left in the graph, QAT trained the image
    tower with half of those activations zeroed (cosine distance to fp32 0.06 in train form vs 0.001 in eval form).
    A short QAT fine-tune should see what inference sees, so it runs without dropout."""
    drops = [n for n in gm.graph.nodes
             if n.op == "call_function" and n.target in (torch.ops.aten.dropout.default, torch.ops.aten.dropout_.default)]
    for node in drops:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    if drops:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return len(drops)


def prepare_qat(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> GraphModule:
    """Export `module` with a dynamic batch dim, fold BatchNorm into conv, and insert QAT fake-quant.

    The returned graph module is in train mode; use `set_train` (not `.train()/.eval()`) to switch it.
    """
    quantizer = make_quantizer(has_embedding(module), linear_per_channel=linear_per_channel(module))
    gm = prepare_qat_pt2e(_capture(module, example_inputs), quantizer)
    move_exported_model_to_train(gm)
    return gm


OBSERVERS = ("histogram", "minmax")  # post-training activation observers; histogram is the XNNPACK config's own


def _activation_observer(cfg: Any, observer: str) -> Any:
    """`cfg` (a QuantizationConfig) with `observer` recording its static activations; the same config for
    "histogram" (the XNNPACK config's). minmax keeps the full observed range, histogram searches a clipped one."""
    if observer == "histogram":
        return cfg
    if observer != "minmax":
        raise ValueError(f"unknown post-training observer {observer!r}; use one of {OBSERVERS}")
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    def swap(spec: QuantizationSpec | None) -> QuantizationSpec | None:
        if spec is None:
            return None
        kwargs = getattr(getattr(spec.observer_or_fake_quant_ctr, "p", None), "keywords", {})  # eps, as upstream
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(**kwargs))

    return dataclasses.replace(cfg, input_activation=swap(cfg.input_activation),
                               output_activation=swap(cfg.output_activation))


def ptq_quantizer(module: torch.nn.Module, observer: str = "histogram", per_channel: bool | None = None):
    """The post-training quantizer of `module`: the XNNPACK backend's (`make_quantizer`), with per-channel linear
    weights when `per_channel` (None: the backend's per-tower choice, `linear_per_channel`) and `observer` on the
    activations. At the defaults it is exactly the quantizer ptq-int8 always used."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    per_channel = linear_per_channel(module) if per_channel is None else per_channel
    quantizer = make_quantizer(has_embedding(module), is_qat=False, linear_per_channel=per_channel)
    if observer != "histogram":
        parts = getattr(quantizer, "quantizers", [quantizer])
        for xnnpack in (q for q in parts if isinstance(q, XNNPACKQuantizer)):
            for op in QUANTIZED_OPS.values():
                xnnpack.set_operator_type(op, _activation_observer(xnnpack.operator_type_config[op], observer))
    return quantizer


def prepare_ptq(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], observer: str = "histogram",
                per_channel: bool | None = None) -> GraphModule:
    """The same capture and quantizer as `prepare_qat`, with plain observers: run calibration batches through the
    returned graph (no training), then `convert_qat`. The post-training baseline that QAT has to beat.
    `observer` / `per_channel`: the recipe's qat.ptq_observer / qat.ptq_per_channel (see `ptq_quantizer`)."""
    quantizer = ptq_quantizer(module, observer, per_channel)
    gm = prepare_pt2e(_capture(module, example_inputs), quantizer)
    move_exported_model_to_eval(gm)
    return gm


def set_train(gm: GraphModule, flag: bool) -> GraphModule:
    """Switch an exported/prepared graph between train and eval (dropout, BN); `.train()` is not allowed on it."""
    return move_exported_model_to_train(gm) if flag else move_exported_model_to_eval(gm)


def _activation_fake_quants(gm: GraphModule) -> dict[str, Any]:
    """The per-tensor *affine* fake-quant modules of a prepared QAT graph, by name: the activations (weights are
    symmetric in the XNNPACK config)."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return {n: m for n, m in gm.named_children()
            if isinstance(m, FakeQuantizeBase) and getattr(m, "qscheme", None) == torch.per_tensor_affine}


def seed_activation_ranges(gm: GraphModule, calibrated: GraphModule) -> int:
    """Give the QAT graph `gm` the activation ranges of `calibrated` (the same tower through `prepare_ptq` and
    calibration batches) and freeze them; weight observers keep following the weights. Returns how many it froze.

    Why: PTQ's activation observers are histograms that clip outliers to minimise the quantisation error, while
    QAT's fake-quants track a moving min/max, which never clips. QAT started from its own ranges therefore begins
    *behind* `ptq-int8`. Seeded and frozen here, QAT at lr 0 converts to exactly the `ptq-int8` graph, and training
    only moves the weights. Both graphs come from one capture and one quantizer, so their observers share names
    (checked: a mismatch is a bug, not a user error)."""
    fakes = _activation_fake_quants(gm)
    observers = dict(calibrated.named_children())
    for name, fq in fakes.items():
        obs = observers.get(name)
        if obs is None or getattr(obs, "qscheme", None) != torch.per_tensor_affine:
            raise RuntimeError(f"QAT and PTQ graphs disagree at {name}: {type(obs).__name__} is not its PTQ observer")
        inner = fq.activation_post_process
        lo, hi = obs._non_linear_param_search() if hasattr(obs, "_non_linear_param_search") else (obs.min_val, obs.max_val)
        inner.min_val.copy_(lo.detach().reshape(inner.min_val.shape))  # convert_pt2e reads the observer's range
        inner.max_val.copy_(hi.detach().reshape(inner.max_val.shape))
        scale, zero_point = inner.calculate_qparams()
        fq.scale.copy_(scale.reshape(fq.scale.shape))  # the fused fake-quant reads these while its observer is off
        fq.zero_point.copy_(zero_point.reshape(fq.zero_point.shape))
        fq.disable_observer()
    return len(fakes)


def convert_qat(gm: GraphModule) -> GraphModule:
    """Freeze observers and replace fake-quant with int8 q/dq ops; the result runs eagerly ("int8 eager")."""
    move_exported_model_to_eval(gm)
    return convert_pt2e(gm)


def _ctor_to_dict(ctor: Any) -> dict[str, Any]:
    partial = getattr(ctor, "p", ctor)
    func = getattr(partial, "func", partial)
    kwargs = {k: getattr(v, "__name__", v) for k, v in getattr(partial, "keywords", {}).items()}
    return {"class": getattr(func, "__name__", str(func)), **kwargs}


def _spec_to_dict(spec: QuantizationSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
        "dtype": str(spec.dtype).removeprefix("torch."),
        "qscheme": str(spec.qscheme).removeprefix("torch."),
        "quant_min": spec.quant_min,
        "quant_max": spec.quant_max,
        "ch_axis": spec.ch_axis,
        "is_dynamic": spec.is_dynamic,
        "observer_or_fake_quant": _ctor_to_dict(spec.observer_or_fake_quant_ctr),
    }


def _linear_weight_row(is_qat: bool, per_channel: bool | None) -> dict[str, Any]:
    """Which linear weights are per-channel: per tower by default (`linear_per_channel`), else the recipe's choice."""
    if per_channel is None:
        return {"text tower": "as weight (per-channel)",
                "image towers": _spec_to_dict(xnnpack_config(is_qat, per_channel=False).weight)}
    return {"both towers": _spec_to_dict(xnnpack_config(is_qat, per_channel=per_channel).weight)}


def describe_qat_config(is_qat: bool = True, observer: str = "histogram", per_channel: bool | None = None) -> dict[str, Any]:
    """The exact quantization recipe as a JSON-able dict, for run reports. `observer` / `per_channel`: the
    post-training choices (`ptq_quantizer`); at their defaults the dict is what it always was."""
    import executorch.version
    import torchao

    cfg = xnnpack_config(is_qat) if is_qat else _activation_observer(xnnpack_config(is_qat), observer)
    embedding = get_embedding_operators_config().config
    return {
        "flow": f"torchao.quantization.pt2e {'prepare_qat_pt2e' if is_qat else 'prepare_pt2e (calibration)'} -> convert_pt2e",
        "quantizer": "executorch XNNPACKQuantizer (+ torchao EmbeddingQuantizer for nn.Embedding)",
        "quantized_ops": list(QUANTIZED_OPS),
        "is_qat": cfg.is_qat,
        "input_activation": _spec_to_dict(cfg.input_activation),
        "output_activation": _spec_to_dict(cfg.output_activation),
        "weight": _spec_to_dict(cfg.weight),
        "linear_weight": _linear_weight_row(is_qat, None if is_qat else per_channel),
        "bias": "fp32 in training; XNNPACK stores it as int32 (scale = input scale x weight scale)",
        "embedding_weight": _spec_to_dict(embedding.weight),  # observed (not fake-quantized) during QAT
        "batchnorm": "folded into the preceding conv before prepare (frozen running statistics)",
        "export": {"dynamic_batch": True, "max_batch": MAX_BATCH},
        "versions": {
            "torch": torch.__version__,
            "torchao": torchao.__version__,
            "executorch": executorch.version.__version__,
        },
    }
