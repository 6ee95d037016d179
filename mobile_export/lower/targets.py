"""Lowering targets by name: the one table that says what each backend can do, and `get_target(name).lower()`.

A target owns its quantizer and its lowering (as ExecuTorch's `backends/<name>/` folders do), so no caller asks which
backend it holds: it reads the target's capabilities (`int8_only`, `runs_on_host`, `own_quantizer`) and calls its
verbs (`lower`, `quantize`).

XNNPACK (CPU, every phone) is always there. NPU backends need vendor SDKs that are rarely installed, so they are
registered with the Python modules they need: listing shows them as "not installed" instead of crashing, and asking
for one gives a one-line `UserError`. Importing this table imports no SDK and no torch (the recipe loader validates
`export.target` against it): each backend module is imported when a target lowers or quantizes.
"""
from __future__ import annotations

import importlib
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from compress.errors import UserError, did_you_mean

if TYPE_CHECKING:
    import torch

    from mobile_export.lower.capture import LoweredProgram

# (target, module, example inputs, metadata, artifacts folder or None, what is lowered) -> program
Lowering = Callable[..., "LoweredProgram"]
# (target, module, example inputs, calibration batches) -> int8 module
Quantizing = Callable[..., "torch.nn.Module"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    lowering: Lowering
    quantizing: Quantizing | None = None  # the backend's own PT2E quantizer, if it has one
    requires: tuple[str, ...] = ()  # Python modules that must import
    env: tuple[str, ...] = ()  # environment variables that must be set (SDK roots)
    int8_only: bool = False  # the accelerator runs int8 programs only
    runs_on_host: bool = False  # the host ExecuTorch runtime can execute its programs (samples, parity, timing)
    artifacts_name: str | None = None  # export sub-folder for the compiler's own reports (Ethos-U: Vela's CSVs)
    # What runs its programs when this host cannot ("Core ML runtime (macOS/iOS only)"): `verify` and `bench` say
    # "this host has no <runtime>" instead of failing inside the host runtime.
    runtime: str = ""
    # `--quant` name -> what the program computes in, where the backend decides it (Core ML: float16 compute for fp32);
    # written into the bundle.
    precisions: tuple[tuple[str, str], ...] = ()
    default_quant: str = "int8"  # `export --quant` when none is given (Core ML: fp32, i.e. float16 compute)

    @property
    def own_quantizer(self) -> bool:
        """True when int8 comes from the backend's own quantizer (`quantize`); False when it comes from the project's
        schemes (compress.quant, built on mobile_export.lower.xnnpack.make_quantizer)."""
        return self.quantizing is not None

    def precision(self, quant: str) -> str | None:
        """What a `quant` program of this target computes in, when the backend decides it (else None)."""
        return dict(self.precisions).get(quant)

    def not_run_here(self) -> str:
        """Why this host does not run the target's programs (for `verify` and `bench` of a non-host bundle)."""
        return f"this host has no {self.runtime or self.name + ' runtime'}"

    def unavailable_reason(self) -> str | None:
        """None if usable here, else why not (never raises: a broken vendor package must not break listing)."""
        for module in self.requires:
            try:
                with _quiet_import():
                    importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - vendor packages fail in many ways (ImportError, OSError, ...)
                return f"not installed ({module}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        missing = [v for v in self.env if not os.environ.get(v)]
        if missing:
            return f"not installed ({', '.join(missing)} not set)"
        return None

    def check_available(self) -> None:
        """UserError when this target's SDK is not installed here."""
        reason = self.unavailable_reason()
        if reason:
            raise UserError(f"target: {self.name!r} is {reason}")

    def lower(
        self,
        module: torch.nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        metadata: dict[str, Any] | None = None,
        *,
        artifacts: Path | None = None,
        what: str = "model",
    ) -> LoweredProgram:
        """Export `module` at batch 1 and lower it to a `.pte` for this target. `metadata`: constant methods to
        embed; `artifacts`: where the compiler keeps its reports (when it writes any); `what`: names the module in
        errors ("the image tower (mobilevit_xxs)")."""
        self.check_available()  # an uninstalled SDK fails before the slow export
        return self.lowering(self, module, example_inputs, metadata, artifacts, what)

    def quantize(
        self,
        module: torch.nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        calibration: Iterable[tuple[torch.Tensor, ...]],
    ) -> torch.nn.Module:
        """Post-training int8 with the backend's own quantizer, calibrated on `calibration` batches."""
        if self.quantizing is None:
            raise UserError(f"target: {self.name!r} has no quantizer of its own; its int8 comes from the project's "
                            "quantization schemes (compress.quant.schemes)")
        self.check_available()
        return self.quantizing(self, module, example_inputs, calibration)


TARGETS: dict[str, Target] = {}


@contextmanager
def _quiet_import() -> Iterator[None]:
    """Probing a vendor SDK must not write to the terminal: coremltools, for one, logs a dozen warnings at import
    ("Failed to load _MLModelProxy", its scikit-learn and torch version checks), which would break the one-line
    output of `targets` and the one-line errors of `export`. Only the import itself is quieted."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def register_target(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    env: tuple[str, ...] = (),
    description: str = "",
    quantize: Quantizing | None = None,
    int8_only: bool = False,
    runs_on_host: bool = False,
    artifacts_name: str | None = None,
    runtime: str = "",
    precisions: dict[str, str] | None = None,
    default_quant: str = "int8",
) -> Callable[[Lowering], Lowering]:
    """Decorator: register `fn(target, module, example_inputs, metadata, artifacts, what) -> LoweredProgram` as
    the lowering of `name` (its docstring is the description unless one is given)."""

    def wrap(fn: Lowering) -> Lowering:
        TARGETS[name] = Target(name, description or (fn.__doc__ or "").strip(), fn, quantize, requires, env,
                               int8_only, runs_on_host, artifacts_name, runtime,
                               tuple((precisions or {}).items()), default_quant)
        return fn

    return wrap


def target_names() -> list[str]:
    return sorted(TARGETS)


def list_targets() -> dict[str, str]:
    """Target name -> "available" or "not installed (...)"."""
    return {name: t.unavailable_reason() or "available" for name, t in sorted(TARGETS.items())}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"target: {name!r} is not a known target; {did_you_mean(name, TARGETS)}")
    return TARGETS[name]


def check_available(name: str) -> Target:
    """The target, or a UserError when it is unknown or its SDK is not installed."""
    target = get_target(name)
    target.check_available()
    return target


def lower_to_pte(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target: str = "xnnpack",
    metadata: dict[str, Any] | None = None,
) -> LoweredProgram:
    """`get_target(target).lower(module, example_inputs, metadata)`."""
    return get_target(target).lower(module, example_inputs, metadata)


# --- the table -------------------------------------------------------------------------------------------------------

@register_target(
    "xnnpack", requires=("executorch.backends.xnnpack.partition.xnnpack_partitioner",), runs_on_host=True
)
def _xnnpack(target: Target, module, example_inputs, metadata, artifacts, what) -> LoweredProgram:
    """XNNPACK CPU delegate (fp32 and int8), available on every Android/iOS device."""
    from mobile_export.lower import xnnpack

    return xnnpack.lower(module, example_inputs, metadata, target.name)


def _ethos_u(target: Target, module, example_inputs, metadata, artifacts, what) -> LoweredProgram:
    from mobile_export.lower import ethosu

    return ethosu.lower(module, example_inputs, target.name, metadata, what=what, artifacts=artifacts)


def _ethos_u_quantize(target: Target, module, example_inputs, calibration):
    from mobile_export.lower import ethosu

    return ethosu.quantize(module, example_inputs, calibration, target.name)


# Ethos-U programs are int8 through the Arm backend's own quantizer and compiled by Vela (in a child process; see
# mobile_export/lower/ethosu.py). The toolchain comes from PyPI (executorch[ethos-u]: ethos-u-vela, tosa-tools), so
# `make install` brings it.
_ETHOS_U = dict(requires=("tosa_serializer", "ethosu.vela", "executorch.backends.arm.ethosu"), int8_only=True,
                quantize=_ethos_u_quantize, artifacts_name="vela",
                runtime="Ethos-U NPU (`bench --device vela` reads Vela's estimate instead)")
register_target("ethos-u55", **_ETHOS_U, description=(
    "Arm Ethos-U55-128 microNPU (int8, Cortex-M systems); Vela estimates cycles and time per op"))(_ethos_u)
register_target("ethos-u85", **_ETHOS_U, description=(
    "Arm Ethos-U85-256 microNPU (int8, transformer-capable); Vela estimates cycles and time per op"))(_ethos_u)


def _coreml(target: Target, module, example_inputs, metadata, artifacts, what) -> LoweredProgram:
    from mobile_export.lower import coreml

    return coreml.lower(module, example_inputs, metadata, target.name)


def _coreml_quantize(target: Target, module, example_inputs, calibration):
    from mobile_export.lower import coreml

    return coreml.quantize(module, example_inputs, calibration)


# Apple Core ML through ExecuTorch's Core ML backend (mobile_export/lower/coreml.py). coremltools comes with
# executorch's own dependencies and lowers on Linux; only macOS/iOS can run the result.
register_target(
    "coreml", requires=("coremltools", "executorch.backends.apple.coreml.partition",
                        "executorch.backends.apple.coreml.quantizer"),
    quantize=_coreml_quantize, runtime="Core ML runtime (macOS/iOS only)", default_quant="fp32",
    precisions={
        "fp32": "float16 compute, float16 weights (Core ML's default precision)",
        "int8": "int8 weights (symmetric, per output channel; conv and linear), float16 activations and compute",
    },
    description=("Apple Core ML (iPhone/iPad/Mac: Neural Engine, GPU or CPU), iOS 17+; --quant fp32 computes in "
                 "float16, --quant int8 stores int8 weights (Core ML quantizer, W8A16); runs on macOS/iOS only"),
)(_coreml)


def _vendor(target: Target, module, example_inputs, metadata, artifacts, what) -> LoweredProgram:
    from mobile_export.lower import vendors

    return vendors.lower(target.name, module, example_inputs, metadata)


register_target("qnn", requires=("executorch.backends.qualcomm.partition.qnn_partitioner",), env=("QNN_SDK_ROOT",),
                description="Qualcomm QNN HTP (Snapdragon 8 Gen 3 / SM8650, fp16); needs the QNN SDK")(_vendor)
register_target("mediatek", requires=("mtk_converter", "executorch.backends.mediatek"),
                description="MediaTek NeuroPilot APU (Dimensity 9300 / mt6989); needs mtk_converter")(_vendor)
register_target("samsung", requires=("executorch.backends.samsung.partition.enn_partitioner",),
                description="Samsung Exynos ENN NPU (E9955); needs the Exynos AI LiteCore SDK bindings")(_vendor)
register_target("vgf", requires=("tosa_serializer", "executorch.backends.arm.vgf"),
                description="Arm VGF (Vulkan ML extensions); needs the TOSA serializer and model converter")(_vendor)
