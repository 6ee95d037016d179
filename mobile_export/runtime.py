"""Run a `.pte` on the host through ExecuTorch's own C++ runtime (the same kernels and XNNPACK delegate a phone
uses), so numerics are checked on the real artefact rather than on the eager model it came from."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from compress.errors import UserError
from mobile_export.pte_check import check_pte

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


# Lines the runtime writes to the C++ stderr on the first method load of a process (XNNPACK's CPU probe reading
# files that do not exist off Android; the threadpool announcing its size). Noise to a user; anything else the runtime
# says is passed on.
_NOISE = ("[cpuinfo_utils.cpp:", "[threadpool.cpp:")


class RuntimeLog(list):
    """Lines the runtime wrote to stderr inside `runtime_stderr()`, noise removed."""

    @property
    def last(self) -> str:
        return self[-1] if self else ""


@contextmanager
def runtime_stderr() -> Iterator[RuntimeLog]:
    """Capture file descriptor 2 (the C++ runtime logs there, below Python's sys.stderr) around a runtime call.

    On success the captured lines, minus the cpuinfo noise, go back to stderr; on an exception they are left in the
    yielded list for the caller's one-line error (so the user sees one line, not the runtime's log plus ours).
    """
    log = RuntimeLog()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield log
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            log.extend(line for line in text.splitlines() if line.strip() and not line.startswith(_NOISE))
            if log and not failed:
                sys.stderr.write("\n".join(log) + "\n")


def threadpool_size() -> int:
    """The runtime's threadpool size (XNNPACK runs on it)."""
    from executorch.extension.pybindings import portable_lib

    _runtime()
    with runtime_stderr():  # creating the pool probes the CPU (cpuinfo lines)
        return int(portable_lib._threadpool_get_thread_count())


def set_threadpool(threads: int | None) -> int:
    """Resize the runtime's threadpool (None leaves it) and return the previous size, so a caller can put it back.
    The one place the pool is resized: each reset logs "[threadpool.cpp:66] Resetting threadpool ...", kept off the
    terminal here."""
    from executorch.extension.pybindings import portable_lib

    before = threadpool_size()
    if threads is not None:
        with runtime_stderr():
            portable_lib._unsafe_reset_threadpool(threads)
    return before


def _runtime_error(path: Path, what: str, err: Exception, log: RuntimeLog) -> UserError:
    message = str(err).strip().splitlines()
    detail = log.last or (message[-1] if message else type(err).__name__)
    return UserError(f"pte: the ExecuTorch runtime could not {what} {str(path)!r} ({detail}); the file is damaged "
                     "or was written for another runtime version: re-export it")


class PteModule:
    """A loaded `.pte`: call it like the eager tower; constant methods are readable with `metadata(name)`."""

    def __init__(self, path: str | os.PathLike, method: str = "forward", enable_etdump: bool = False,
                 verify_file: bool = True) -> None:
        """The single place a `.pte` is loaded: `check_pte` vets the file first (a damaged one would abort the
        process inside the runtime), and runtime failures become one-line `UserError`s. `verify_file=False` only
        for a file the caller has just checked itself (bench keeps the check out of the timed load)."""
        self.path = Path(path)
        if verify_file or not self.path.is_file():
            check_pte(self.path)
        runtime = _runtime()
        with runtime_stderr() as log:
            try:
                self.program = runtime.load_program(str(self.path), enable_etdump=enable_etdump)
            except RuntimeError as e:
                raise _runtime_error(self.path, "load", e, log) from None
        if method not in self.program.method_names:
            names = ", ".join(sorted(self.program.method_names))
            raise UserError(f"pte: {str(self.path)!r} has no method {method!r}; it has: {names}")
        self.method = self._load_method(method)
        self.method_name = method

    def _load_method(self, name: str):
        with runtime_stderr() as log:
            try:
                return self.program.load_method(name)
            except RuntimeError as e:
                raise _runtime_error(self.path, f"load method {name!r} of", e, log) from None

    @property
    def method_names(self) -> set[str]:
        return set(self.program.method_names)

    def run_once(self, *tensors: torch.Tensor) -> torch.Tensor:
        """One execution of the method exactly as exported (batch 1)."""
        try:
            return self.method.execute(list(tensors))[0]
        except RuntimeError as e:
            shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in tensors)
            raise UserError(f"pte: {str(self.path)!r} failed to run {self.method_name!r} on inputs {shapes} ({e}); "
                            "pass inputs of the exported shapes (see `default_inputs`)") from None

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
        value = self._load_method(name).execute([])[0]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        return value
