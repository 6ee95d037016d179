"""Run a `.pte` on the host through ExecuTorch's own C++ runtime (the same kernels and XNNPACK delegate a phone
uses), so numerics are checked on the real artefact rather than on the eager model it came from."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from compress.errors import UserError

# ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) for the input dtypes our towers use.
_SCALAR_TYPES: dict[int, torch.dtype] = {
    0: torch.uint8, 1: torch.int8, 3: torch.int32, 4: torch.int64, 5: torch.float16, 6: torch.float32, 11: torch.bool,
}


def _runtime():
    """The ExecuTorch runtime, with the quantized kernel library registered: int8 embedding tables run as
    `quantized_decomposed::embedding_byte`, which is not in the default pybinding op set."""
    import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed::* kernels)
    from executorch.runtime import Runtime

    return Runtime.get()


class PteModule:
    """A loaded `.pte`: call it like the eager tower; constant methods are readable with `metadata(name)`."""

    def __init__(self, path: str | os.PathLike, method: str = "forward") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"pte: {str(self.path)!r} does not exist")
        self.program = _runtime().load_program(str(self.path))
        if method not in self.program.method_names:
            names = ", ".join(sorted(self.program.method_names))
            raise UserError(f"pte: {str(self.path)!r} has no method {method!r}; it has: {names}")
        self.method = self.program.load_method(method)
        self.method_name = method

    @property
    def method_names(self) -> set[str]:
        return set(self.program.method_names)

    def run_once(self, *tensors: torch.Tensor) -> torch.Tensor:
        """One execution of the method exactly as exported (batch 1)."""
        return self.method.execute(list(tensors))[0]

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Batch-B inputs: the method is batch 1, so rows run one at a time and are stacked."""
        batch = tensors[0].shape[0]
        rows = [self.run_once(*(t[i : i + 1].contiguous() for t in tensors)) for i in range(batch)]
        return torch.cat(rows, dim=0)

    def default_inputs(self) -> tuple[torch.Tensor, ...]:
        """All-ones inputs of the method's exported shapes/dtypes: what ExecuTorch's minibench app feeds
        (`module.forward()` with no arguments), so host and phone time the same call."""
        meta = self.method.metadata
        infos = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        return tuple(torch.ones(info.sizes(), dtype=_SCALAR_TYPES[info.dtype()]) for info in infos)

    def metadata(self, name: str) -> Any:
        """A constant method embedded at export (`lower_to_pte(..., metadata=...)`)."""
        if name not in self.program.method_names:
            raise UserError(f"pte: {str(self.path)!r} has no metadata {name!r}")
        value = self.program.load_method(name).execute([])[0]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        return value
