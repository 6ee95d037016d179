"""The XNNPACK backend (CPU, every Android/iOS phone): its int8 quantizer configuration, its graph passes, its
partitioner and its lowering, as ExecuTorch's own `backends/xnnpack/` bundles them.

Int8 for XNNPACK comes from the project's schemes (compress.quant: QAT or calibration through PT2E), which build on
`make_quantizer` here; this file lowers whatever module it is given (fp32, or a converted q/dq graph).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch

from mobile_export.lower.capture import LoweredProgram, lower_edge

if TYPE_CHECKING:
    from torchao.quantization.pt2e.quantizer import Quantizer

CONSTANT_KEY_HEX = 16  # 64-bit content hash per constant; two different constants on one key fail loudly

# Ops whose weights and input activations become int8. Only conv and linear: XNNPACK's other patterns (add, mul, cat,
# pool) would also quantize the text tower's additive attention mask (-1e4, whose range swamps the logits), and on
# MobileViT they cut int8-vs-fp32 cosine from 0.99 to 0.83 without making the .pte smaller. Left in fp32, those ops
# still run inside the XNNPACK delegate.
QUANTIZED_OPS: dict[str, torch._ops.OpOverload] = {
    "conv2d": torch.ops.aten.conv2d.default,
    "linear": torch.ops.aten.linear.default,
}


# --- int8: the XNNPACK PT2E quantizer --------------------------------------------------------------------------------

def xnnpack_config(is_qat: bool = True, per_channel: bool = True):
    """ExecuTorch's symmetric XNNPACK quantization config (int8 weights, per-tensor affine int8 activations)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    return get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=is_qat)  # lru-cached upstream


def has_embedding(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Embedding) for m in module.modules())


def linear_per_channel(module: torch.nn.Module) -> bool:
    """Per-channel linear weights for the text tower, one scale per linear (per-tensor) for image towers.

    Why: XNNPACK stores two fp32 scales per output channel of a per-channel layer (weight, and the int32 bias's), each
    under its own named key. On MobileViT-XXS (1M parameters, 5,280 linear output channels) that overhead kept the
    int8 `.pte` at 30.1% of fp32; per-tensor linears bring it to about 28.7% with the same cosine to fp32 (0.994).
    Convolutions stay per-channel: folded BatchNorm gives their output channels very different ranges, which linear
    layers (behind LayerNorm) do not have. The text tower, whose size is its embedding table, keeps per-channel."""
    return has_embedding(module)


def make_quantizer(embedding: bool, is_qat: bool = True, linear_per_channel: bool = True) -> Quantizer:
    """XNNPACK int8 (per-channel conv weights, per-channel or per-tensor linear weights, per-tensor activations)
    for conv + linear; plus int8 per-row embedding tables when `embedding` (lowered to ExecuTorch's
    `quantized_decomposed::embedding_byte`). `is_qat=False`: plain observers (post-training calibration)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import EmbeddingQuantizer

    xnnpack = XNNPACKQuantizer()
    for name, op in QUANTIZED_OPS.items():
        xnnpack.set_operator_type(op, xnnpack_config(is_qat, per_channel=name != "linear" or linear_per_channel))
    return ComposableQuantizer([EmbeddingQuantizer(), xnnpack]) if embedding else xnnpack


# --- serialisation: short constant keys ------------------------------------------------------------------------------

class _ShortSha256:
    """hashlib.sha256 look-alike whose hexdigest is cut to CONSTANT_KEY_HEX characters."""

    def __init__(self, data: bytes = b"") -> None:
        import hashlib

        self._hash = hashlib.sha256(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:CONSTANT_KEY_HEX]


class _ShortHashlib:
    sha256 = _ShortSha256


@contextmanager
def short_constant_keys() -> Iterator[None]:
    """Name XNNPACK's constants by a 16-hex-digit content hash instead of the full 64-digit sha256.

    The XNNPACK serializer keys every weight, bias and scale array by its sha256 hex digest, and each key is stored
    twice in the `.pte` (the program's named-data table and the delegate graph). An int8 tower has twice the
    constants of its fp32 twin (per-channel scales for weights and biases), so on MobileViT-XXS the keys were 3% of
    the int8 file against 0.4% of the fp32 one. 64 bits still tell a few hundred constants apart, and ExecuTorch's
    NamedDataStore raises if one key is ever given two different buffers, so a collision cannot go unnoticed.
    """
    from executorch.backends.xnnpack.operators import node_visitor

    saved = node_visitor.hashlib
    node_visitor.hashlib = _ShortHashlib
    try:
        yield
    finally:
        node_visitor.hashlib = saved


# --- passes, partitioner, lowering -----------------------------------------------------------------------------------

def passes() -> list[Any]:
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


def partitioners() -> list[Any]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def lower(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    metadata: dict[str, Any] | None = None,
    target: str = "xnnpack",
) -> LoweredProgram:
    """Export at batch 1, run the XNNPACK passes, partition for XNNPACK (constants keyed by short hashes),
    fuse int8 embeddings and serialise to `.pte` bytes."""
    parts, cleanups = partitioners(), passes()
    return lower_edge(module, example_inputs, target, parts, cleanups, metadata, serializing=short_constant_keys)
