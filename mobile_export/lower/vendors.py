"""Phone-NPU and GPU backends whose SDKs do not come from PyPI (Qualcomm QNN, MediaTek NeuroPilot, Samsung Exynos,
Arm VGF): each is a partitioner factory, lowered through the generic ExecuTorch path (`capture.lower_edge`).
What each target is and needs is in the target table (targets.py).

They lower whatever program they are given (fp32, or a module quantized elsewhere); none is installed by `make
install`, so `targets` lists them as "not installed" and asking for one is a one-line `UserError`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from mobile_export.lower.capture import LoweredProgram, lower_edge


def qnn() -> list[Any]:
    """QnnPartitioner for the SM8650 HTP, fp16."""
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


def mediatek() -> list[Any]:
    """NeuropilotPartitioner for the mt6989 platform."""
    from executorch.backends.mediatek import NeuropilotPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    return [NeuropilotPartitioner([CompileSpec("platform-config", b"mt6989")])]


def samsung() -> list[Any]:
    """EnnPartitioner for the E9955."""
    from executorch.backends.samsung.partition.enn_partitioner import EnnPartitioner
    from executorch.backends.samsung.serialization.compile_options import gen_samsung_backend_compile_spec

    return [EnnPartitioner([gen_samsung_backend_compile_spec("E9955")])]


def vgf() -> list[Any]:
    """VgfPartitioner with the default compile spec."""
    from executorch.backends.arm.vgf import VgfCompileSpec, VgfPartitioner

    return [VgfPartitioner(VgfCompileSpec())]


PARTITIONERS: dict[str, Callable[[], list[Any]]] = {"qnn": qnn, "mediatek": mediatek, "samsung": samsung, "vgf": vgf}


def lower(
    target: str,
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    metadata: dict[str, Any] | None = None,
) -> LoweredProgram:
    """Export at batch 1, partition with `target`'s vendor partitioner, serialise."""
    return lower_edge(module, example_inputs, target, PARTITIONERS[target](), [], metadata)
