"""Apple Core ML (iPhone, iPad, Mac: the Neural Engine, the GPU or the CPU, as Core ML schedules it) through
ExecuTorch's Core ML backend (`executorch.backends.apple.coreml`): its partitioner, its compile specs and its PT2E
quantizer, as ExecuTorch's own Core ML recipes (`CoreMLRecipeType.FP16`, `PT2E_INT8_WEIGHT_ONLY`) combine them.

Lowering runs ahead of time on any host: coremltools converts each delegated partition into an ML program that is
stored inside the `.pte`. Running it needs Core ML, which exists on macOS and iOS only, so nothing on this host runs
these programs: their bundle carries no BundledProgram samples and no label embeddings, `verify` checks structure and
hashes, and `bench` says plainly that it cannot time them.

Precision (`--quant`):
- `fp32`: the fp32 tower, computed by Core ML in float16 (Core ML's default compute precision and ExecuTorch's FP16
  recipe: weights stored as fp16, activations fp16; the Neural Engine computes in fp16 only).
- `int8`: int8 weights (symmetric, per output channel, conv and linear) from `CoreMLQuantizer`'s weight-only config,
  float16 activations and compute (W8A16). Weight ranges need no calibration data: the calibration rows the export
  hands in are not run (one example row lets the weight observers record); the token embedding table stays fp16
  (the quantizer takes conv and linear only).
Both set the minimum deployment target to iOS 17 / macOS 14, what ExecuTorch's Apple runtime itself requires.

coremltools is loud: import-time lines ("Failed to load _MLModelProxy", its scikit-learn and torch version checks),
per-partition INFO/WARNING logs and progress bars. `quiet_coreml` keeps them off the terminal while this file works;
the import probe of the target table is quiet too (mobile_export/lower/targets.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from typing import Any, Iterable, Iterator

import torch
from torch.fx import GraphModule

from mobile_export.lower.capture import LoweredProgram, export_batch_one, lower_edge

MINIMUM_DEPLOYMENT_TARGET = "iOS17"  # ExecuTorch's Apple frameworks need iOS 17 / macOS 14; the int8 recipe too
COMPUTE_PRECISION = "float16"
_LOGGERS = ("coremltools", "executorch.backends.apple.coreml")
_MODULES = ("executorch.backends.apple.coreml.partition", "executorch.backends.apple.coreml.quantizer")
# Module-level `tqdm` names coremltools' converter draws its progress bars with.
_PROGRESS_BARS = (("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
                  ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"))


@contextlib.contextmanager
def quiet_coreml() -> Iterator[None]:
    """coremltools' and the Core ML backend's logs (below ERROR), warnings and progress bars off while active; the
    first import of coremltools happens inside, so its import-time lines are kept off too."""
    import importlib

    saved: dict[str, int] = {}

    def quiet(names: Iterable[str]) -> None:
        for name in names:
            if name not in saved:
                saved[name] = logging.getLogger(name).level
                logging.getLogger(name).setLevel(logging.ERROR)

    patched: list[tuple[Any, str, Any]] = []
    try:
        with warnings.catch_warnings():  # import-time version checks; numpy casts in the converter
            warnings.simplefilter("ignore")
            quiet(_LOGGERS)
            for module_name in _MODULES:  # their loggers set their own level at import: quieted once they exist
                importlib.import_module(module_name)
            quiet(n for n in list(logging.root.manager.loggerDict) if n.startswith(_LOGGERS))
            for module_name, attr in _PROGRESS_BARS:
                module = importlib.import_module(module_name)
                original = getattr(module, attr, None)
                if original is not None:
                    setattr(module, attr, functools.partial(original, disable=True))
                    patched.append((module, attr, original))
            yield
    finally:
        for module, attr, original in patched:
            setattr(module, attr, original)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def compile_specs() -> list[Any]:
    """The Core ML compile specs: every compute unit, float16 compute precision, iOS 17 deployment target."""
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend

    return CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit.ALL, compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
    )


def partitioners() -> list[Any]:
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    # take_over_mutable_buffer=False: the towers hold no state; Core ML state would need iOS 18.
    return [CoreMLPartitioner(compile_specs=compile_specs(), take_over_mutable_buffer=False)]


# --- int8 weights with the Core ML quantizer -------------------------------------------------------------------------

def quantizer():
    """`CoreMLQuantizer` with ExecuTorch's weight-only int8 config (PT2E_INT8_WEIGHT_ONLY): symmetric int8 weights,
    one scale per output channel, float activations."""
    import coremltools as ct
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    config = ct.optimize.torch.quantization.LinearQuantizerConfig(
        global_config=ct.optimize.torch.quantization.ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric", activation_dtype=torch.float32, weight_dtype=torch.qint8,
            weight_per_channel=True,
        )
    )
    return CoreMLQuantizer(config)


def quantize(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: Iterable[tuple[torch.Tensor, ...]] = (),
) -> GraphModule:
    """Int8 weights (W8A16) through `CoreMLQuantizer`: export at batch 1, prepare, one forward pass so each weight
    observer records its tensor's range, convert to a graph of int8 weights and dequantize nodes.

    `calibration` is accepted as every backend quantizer takes it and left unread: activations stay float, so their
    ranges are never used. The quantizer's annotation exports ~400 pattern graphs itself (about 45 s per tower on a
    2-core host, whatever the tower's size)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    del calibration  # weight-only: see the docstring
    example = tuple(x[:1] for x in example_inputs)
    with quiet_coreml():
        prepared = prepare_pt2e(export_batch_one(module, example).module(), quantizer())
        with torch.no_grad():
            prepared(*example)
        converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted


# --- lowering --------------------------------------------------------------------------------------------------------

def lower(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    metadata: dict[str, Any] | None = None,
    target: str = "coreml",
) -> LoweredProgram:
    """Export at batch 1, partition for Core ML (float16 compute, iOS 17), convert each partition with coremltools
    and serialise. `module`: the fp32 tower, or `quantize`'s int8-weight graph. The compute precision and deployment
    target are embedded as constant methods beside the model's own metadata, so an app can read them."""
    metadata = {**(metadata or {}), "compute_precision": COMPUTE_PRECISION,
                "minimum_deployment_target": MINIMUM_DEPLOYMENT_TARGET}
    with quiet_coreml():
        return lower_edge(module, example_inputs, target, partitioners(), [], metadata)
