"""Lowering targets by name: a target knows which ExecuTorch partitioners to hand the program to.

XNNPACK (CPU, every phone) is always there. NPU backends need vendor SDKs that are rarely installed, so they are
registered with the Python modules they need: listing shows them as "not installed" instead of crashing, and asking
for one gives a one-line `UserError`. The int8 QAT path (`compress.quant.pt2e`) targets XNNPACK's quantizer; NPU targets
here lower whatever program they are given (fp32, or one quantized with their own quantizer).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from compress.errors import UserError

PartitionerFactory = Callable[[], list[Any]]
PassFactory = Callable[[], list[Any]]


@dataclass(frozen=True)
class Target:
    name: str
    make_partitioners: PartitionerFactory
    requires: tuple[str, ...] = ()  # Python modules that must import
    env: tuple[str, ...] = ()  # environment variables that must be set (SDK roots)
    description: str = ""
    make_passes: PassFactory | None = None  # edge-dialect passes run before partitioning

    def unavailable_reason(self) -> str | None:
        """None if usable here, else why not (never raises: a broken vendor package must not break listing)."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - vendor packages fail in many ways (ImportError, OSError, ...)
                return f"not installed ({module}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        missing = [v for v in self.env if not os.environ.get(v)]
        if missing:
            return f"not installed ({', '.join(missing)} not set)"
        return None


TARGETS: dict[str, Target] = {}


def register_target(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    env: tuple[str, ...] = (),
    passes: PassFactory | None = None,
    description: str = "",
) -> Callable[[PartitionerFactory], PartitionerFactory]:
    """Decorator: register a zero-argument function that returns the partitioner list for `name`."""

    def wrap(fn: PartitionerFactory) -> PartitionerFactory:
        TARGETS[name] = Target(name, fn, requires, env, description or (fn.__doc__ or "").strip(), passes)
        return fn

    return wrap


def list_targets() -> dict[str, str]:
    """Target name -> "available" or "not installed (...)"."""
    return {name: t.unavailable_reason() or "available" for name, t in sorted(TARGETS.items())}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        import difflib

        close = difflib.get_close_matches(name, list(TARGETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"target: {name!r} is not a known target; {hint}known: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]


def resolve_target(name: str) -> tuple[list[Any], list[Any]]:
    """(partitioners, pre-partition passes) for `name`; UserError if unknown or its SDK is not installed."""
    target = get_target(name)
    reason = target.unavailable_reason()
    if reason:
        raise UserError(f"target: {name!r} is {reason}")
    return target.make_partitioners(), (target.make_passes() if target.make_passes else [])


def _xnnpack_passes() -> list[Any]:
    """Shape-op cleanups (upstream ExecuTorch transforms) so XNNPACK claims the whole attention block.

    Without them, `q @ k.T` leaves no-op `expand_copy` and the qkv unbind leaves `squeeze_copy` outside the delegate:
    each splits a partition, and every split adds q/dq conversions, delegate-call overhead and `.pte` bytes
    (MobileViT-XXS: 49 -> 22 delegate partitions, int8 `.pte` 3% smaller; only LayerNorm is left outside).
    """
    from executorch.backends.transforms.fuse_cascaded_transpose_or_permute_ops import (
        FuseCascadedTransposeOrPermuteOps,
    )
    from executorch.backends.transforms.fuse_cascaded_view_ops import FuseCascadedViewOps
    from executorch.backends.transforms.remove_clone_ops import RemoveCloneOpsTransform
    from executorch.backends.transforms.replace_nop_transpose_or_permute_with_view import (
        ReplaceNopTransposeOrPermuteWithViewPass,
    )
    from executorch.backends.transforms.replace_squeeze_unsqueeze_with_view import (
        ReplaceSqueezeAndUnsqueezeWithViewPass,
    )
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass

    return [
        RemoveNoopExpandCopyPass(),
        ReplaceSqueezeAndUnsqueezeWithViewPass(),
        RemoveCloneOpsTransform(),
        ReplaceNopTransposeOrPermuteWithViewPass(),
        FuseCascadedTransposeOrPermuteOps(),
        FuseCascadedViewOps(),
    ]


@register_target(
    "xnnpack", requires=("executorch.backends.xnnpack.partition.xnnpack_partitioner",), passes=_xnnpack_passes
)
def _xnnpack() -> list[Any]:
    """XNNPACK CPU delegate (fp32 and int8), available on every Android/iOS device."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


@register_target(
    "qnn",
    requires=("executorch.backends.qualcomm.partition.qnn_partitioner",),
    env=("QNN_SDK_ROOT",),
)
def _qnn() -> list[Any]:
    """Qualcomm QNN HTP (Snapdragon 8 Gen 3 / SM8650, fp16); needs the QNN SDK."""
    from executorch.backends.qualcomm.partition.qnn_partitioner import QnnPartitioner
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
    )

    specs = generate_qnn_executorch_compiler_spec(
        soc_model=QcomChipset.SM8650, backend_options=generate_htp_compiler_spec(use_fp16=True)
    )
    return [QnnPartitioner(specs)]


@register_target("mediatek", requires=("mtk_converter", "executorch.backends.mediatek"))
def _mediatek() -> list[Any]:
    """MediaTek NeuroPilot APU (Dimensity 9300 / mt6989); needs mtk_converter."""
    from executorch.backends.mediatek import NeuropilotPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    return [NeuropilotPartitioner([CompileSpec("platform-config", b"mt6989")])]


@register_target("samsung", requires=("executorch.backends.samsung.partition.enn_partitioner",))
def _samsung() -> list[Any]:
    """Samsung Exynos ENN NPU (E9955); needs the Exynos AI LiteCore SDK bindings."""
    from executorch.backends.samsung.partition.enn_partitioner import EnnPartitioner
    from executorch.backends.samsung.serialization.compile_options import gen_samsung_backend_compile_spec

    return [EnnPartitioner([gen_samsung_backend_compile_spec("E9955")])]


_ETHOS_U_REQUIRES = ("tosa_serializer", "ethosu.vela", "executorch.backends.arm.ethosu")


def _ethos_u(target: str) -> PartitionerFactory:
    def make() -> list[Any]:
        from executorch.backends.arm.ethosu import EthosUPartitioner

        from mobile_export.lower.ethosu import compile_spec

        return [EthosUPartitioner(compile_spec(target))]

    return make


# Ethos-U programs are int8 through the Arm backend's own quantizer and compiled by Vela (in a child process):
# lowering goes through mobile_export.lower.ethosu.lower, not lower_to_pte's XNNPACK path. The toolchain comes from PyPI
# (executorch[ethos-u]: ethos-u-vela, tosa-tools), so `make install` brings it.
register_target("ethos-u55", requires=_ETHOS_U_REQUIRES, description=(
    "Arm Ethos-U55-128 microNPU (int8, Cortex-M systems); Vela estimates cycles and time per op"))(_ethos_u("ethos-u55"))
register_target("ethos-u85", requires=_ETHOS_U_REQUIRES, description=(
    "Arm Ethos-U85-256 microNPU (int8, transformer-capable); Vela estimates cycles and time per op"))(_ethos_u("ethos-u85"))


@register_target("vgf", requires=("tosa_serializer", "executorch.backends.arm.vgf"))
def _vgf() -> list[Any]:
    """Arm VGF (Vulkan ML extensions); needs the TOSA serializer and model converter."""
    from executorch.backends.arm.vgf import VgfCompileSpec, VgfPartitioner

    return [VgfPartitioner(VgfCompileSpec())]
