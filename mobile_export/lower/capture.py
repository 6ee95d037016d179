"""What every backend shares: the batch-1 capture of an eager (fp32) or converted (int8 q/dq) module, the generic
ExecuTorch edge lowering, the lowered program and how it is saved.

The `.pte` takes batch-1 static shapes: phones run one image / one caption at a time, and static shapes let XNNPACK
pre-pack weights and plan memory once. Metadata (embed dim, image size, context length, ...) is embedded as constant
methods so the app reads it from the model instead of hard-coding it.

Nothing here runs a program (lowering needs no runtime); the backends (`xnnpack`, `ethosu`, `vendors`) build on this
file and `targets` names them.
"""
from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch.fx import GraphModule

from compress.atomic import atomic_path
from compress.errors import UserError

MetadataValue = int | float | str | bool
SEGMENT_ALIGNMENT = 64


@dataclass
class LoweredProgram:
    buffer: bytes
    delegation: dict[str, Any]
    target: str = "xnnpack"
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None  # compiler's latency estimate (Ethos-U: Vela), when the target makes one

    @property
    def size_bytes(self) -> int:
        return len(self.buffer)


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """Delegated vs non-delegated node counts and the non-delegated ops (what runs on ExecuTorch's portable CPU
    kernels instead of the backend: the usual reason a model is slower on device than expected)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    # `getitem` only unpacks tuple outputs (of delegate calls, layer norm): bookkeeping, not an op that runs.
    ops = sorted((b for b in info.delegation_by_operator.values() if b.op_type != "getitem"), key=lambda b: b.op_type)
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_nodes": info.num_non_delegated_nodes,
        "delegated_ops": {b.op_type: b.delegated for b in ops if b.delegated},
        "non_delegated_ops": {b.op_type: b.non_delegated for b in ops if b.non_delegated},
    }


@contextmanager
def explicit_attention(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Trace timm attention as explicit `softmax(q @ k.T * s) @ v` instead of `F.scaled_dot_product_attention`.

    Same maths, but ExecuTorch decomposes SDPA into a NaN-safe softmax (`eq/any/where/logical_not/full_like`) that
    XNNPACK does not take: for MobileViT that left 81 ops outside the delegate and made the int8 `.pte` 4% larger.
    timm reads `fused_attn` at forward time, so flipping it for the capture is enough.
    """
    flipped = [m for m in module.modules() if getattr(m, "fused_attn", False) is True]
    for m in flipped:
        m.fused_attn = False
    try:
        yield module
    finally:
        for m in flipped:
            m.fused_attn = True


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, MetadataValue]:
    """A copy of the constant methods to embed; one-line errors for a value the program cannot hold."""
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(value, (int, float, str, bool)):
            raise UserError(f"metadata: {key!r} must be an int, float, str or bool, got {type(value).__name__}")
        if key == "forward":
            raise UserError("metadata: 'forward' is reserved for the model method")
    return metadata


def _batch_one(example_inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(x[:1].contiguous() for x in example_inputs)


def export_batch_one(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export with static batch-1 shapes; eager modules are exported in eval mode, without grad and with
    explicit attention (their training flag is put back). The one capture every backend lowers and the Arm quantizer
    prepares; compress.quant.pt2e captures separately (dynamic batch, grad kept for QAT)."""
    example = _batch_one(tuple(example_inputs))
    if isinstance(module, GraphModule):  # captured graphs (QAT-converted) forbid .eval(); convert_qat set eval
        return torch.export.export(module, example)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), explicit_attention(module):
            return torch.export.export(module, example)
    finally:
        module.train(was_training)


def lower_edge(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target: str,
    partitioners: list[Any],
    passes: list[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    serializing: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
) -> LoweredProgram:
    """The generic ExecuTorch path: export at batch 1, run `passes`, partition, and serialise to `.pte` bytes.
    `serializing`: a context the backend's delegate serialisation runs in (XNNPACK: short constant keys).

    Int8 embedding tables (dequantize -> embedding) are fused into `quantized_decomposed::embedding_byte`, so the
    table is stored as int8 in the `.pte` rather than folded back to fp32.
    """
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.quant_fusion_pass import QuantFusionPass, _get_node_value_dict

    metadata = check_metadata(metadata)
    exported = export_batch_one(module, example_inputs)
    with serializing():
        edge = to_edge_transform_and_lower(
            exported, transform_passes=passes or [], partitioner=partitioners, constant_methods=metadata or None
        )
    # Fuse what the delegate left as dequantize -> embedding into embedding_byte (before reading the delegation
    # info, so it reports the op the phone will really run).
    # node_value_dict: torchao's int8 embedding patterns (the 8da*w text table) check the table's zero points
    # through it (ExecuTorch's own test_quant_fusion_pass passes it the same way).
    values = _get_node_value_dict(edge.exported_program())
    edge = edge.transform([QuantFusionPass(_fix_node_meta_val=True, node_value_dict=values)])
    delegation = delegation_summary(edge.exported_program().graph_module)
    # Constant-propagate what the fusion left (weight packing / dtype conversions) so only int8 data is stored.
    # Segment alignment 64 (ExecuTorch's default is 128): every constant still starts on a cache line, above the
    # 16 bytes XNNPACK asks of its weights; on a 1M-parameter int8 tower the 128-byte padding alone was 0.6%.
    program = edge.to_executorch(
        ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True, segment_alignment=SEGMENT_ALIGNMENT))
    return LoweredProgram(program.buffer, delegation, target, metadata)


def save_pte(program: LoweredProgram | bytes, path: str | os.PathLike) -> Path:
    """Write the `.pte` atomically (temp file + rename), so a crash never leaves a truncated model."""
    buffer = program.buffer if isinstance(program, LoweredProgram) else program
    path = Path(path)
    with atomic_path(path, suffix=".pte") as tmp:
        tmp.write_bytes(buffer)
    return path
