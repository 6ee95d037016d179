"""Arm Ethos-U55 / U85 microNPUs through ExecuTorch's Arm backend: int8 with the backend's own quantizer, TOSA, then
Arm's `ethos-u-vela` compiler, whose performance estimate (cycles and time per op) is the latency figure here.

Nothing on this machine can run an Ethos-U program (no Corstone FVP), so the estimate travels inside the `.pte` as a
`vela_estimate` constant method: `bench --device vela` (mobile_export.bench.vela) reads it back from any `.pte`, in
the same minibench field names as host and phone numbers. This file only lowers: it needs no runtime.

Vela's C++ core can die by signal (it overflows its stack on MobileViT's attention for U55). Inside our process that
would kill the CLI with no message, so every Vela invocation runs in a child process and a crash becomes a
`UserError` naming the tower and the accelerator.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch.fx import GraphModule

from compress.errors import UserError, find_cause
from mobile_export.lower.capture import LoweredProgram, check_metadata, delegation_summary, export_batch_one

# Target name (CLI / recipe) -> Vela accelerator configuration (MAC units per cycle in the suffix).
ACCELERATORS: dict[str, str] = {"ethos-u55": "ethos-u55-128", "ethos-u85": "ethos-u85-256"}
VELA_FLAGS = ["--verbose-cycle-estimate", "--verbose-performance"]
ESTIMATE_METHOD = "vela_estimate"  # constant method holding the JSON estimate
_VELA_CHILD = "import sys\nfrom ethosu.vela import vela\nsys.exit(vela.main(sys.argv[1:]))"


class VelaCrash(RuntimeError):
    """Vela died by a signal (segfault / stack overflow in its C++ core)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        self.signal_name = name
        super().__init__(f"Vela died by {name}" + (f": {detail}" if detail else ""))


class VelaFailed(RuntimeError):
    """Vela exited with an error (unsupported op or configuration)."""


def accelerator_of(target: str) -> str:
    """`ethos-u85` -> `ethos-u85-256`; a full configuration name passes through."""
    if target in ACCELERATORS.values():
        return target
    if target not in ACCELERATORS:
        raise UserError(f"target: {target!r} is not an Ethos-U target; known: {', '.join(ACCELERATORS)}")
    return ACCELERATORS[target]


def compile_spec(target: str):
    from executorch.backends.arm import EthosUCompileSpec

    return EthosUCompileSpec(accelerator_of(target), extra_flags=list(VELA_FLAGS))


# --- int8 with the Arm quantizer -------------------------------------------------------------------------------------

def quantize(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: Iterable[tuple[torch.Tensor, ...]],
    target: str,
) -> GraphModule:
    """Post-training int8 with `EthosUQuantizer` (every op the NPU runs is int8, unlike XNNPACK's conv/linear-only
    QAT config): export at batch 1, calibrate row by row on `calibration` batches, convert to a q/dq graph."""
    from executorch.backends.arm import EthosUQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = EthosUQuantizer(compile_spec(target)).set_global(get_symmetric_quantization_config())
    # check_guards=False: torch 2.14 otherwise adds a `_guards_fn` submodule the Arm passes reject
    gm = export_batch_one(module, example_inputs).module(check_guards=False)
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch in calibration:  # batch-1 graph: the Arm quantizer rejects a symbolic batch dim, NPUs are static
            for i in range(batch[0].shape[0]):
                prepared(*(t[i : i + 1] for t in batch))
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted


# --- Vela in a child process -----------------------------------------------------------------------------------------

@dataclass
class VelaRuns:
    """Where each Vela invocation (one per delegated partition) left its CSV reports."""

    root: Path
    partitions: list[Path] = field(default_factory=list)


class _SubprocessVela:
    """Stands in for the `ethosu.vela.vela` module inside `executorch.backends.arm.arm_vela`: same `main(argv)`, but
    the compiler runs in a child process, so a crash in its C++ core cannot take ours down."""

    def __init__(self, runs: VelaRuns) -> None:
        self.runs = runs

    def main(self, argv: list[str]) -> int:
        argv = [a for a in argv if a]
        out_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("--output-dir=")), None)
        proc = subprocess.run([sys.executable, "-c", _VELA_CHILD, *argv], capture_output=True, encoding="utf-8",
                              errors="replace")
        log = (proc.stdout or "") + (proc.stderr or "")
        keep = self.runs.root / f"partition_{len(self.runs.partitions)}"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "vela.log").write_text(log, encoding="utf-8")
        if proc.returncode < 0:
            raise VelaCrash(-proc.returncode, _last_line(proc.stderr))
        if proc.returncode != 0:
            raise VelaFailed(_last_line(log) or f"exit status {proc.returncode}")
        if out_dir:
            for csv_file in Path(out_dir).glob("*.csv"):
                shutil.copyfile(csv_file, keep / csv_file.name)
        self.runs.partitions.append(keep)
        return 0


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def vela_in_subprocess(root: Path) -> Iterator[VelaRuns]:
    """While active, every Vela compilation ExecuTorch's Arm backend starts runs in a child process and leaves
    its reports under `root/partition_<i>/`."""
    import executorch.backends.arm.arm_vela as arm_vela

    runs = VelaRuns(Path(root))
    original = arm_vela.vela
    arm_vela.vela = _SubprocessVela(runs)
    try:
        yield runs
    finally:
        arm_vela.vela = original


def vela_user_error(err: BaseException, what: str, accelerator: str) -> UserError | None:
    """A Vela crash or failure anywhere in `err`'s chain -> the one-line error the CLI prints; else None."""
    crash = find_cause(err, VelaCrash)
    if crash is not None:
        hint = ("; MobileViT-style attention is known to crash Vela 5.1 on U55, export with --target ethos-u85"
                if "u55" in accelerator else "")
        return UserError(f"ethos-u: Vela crashed ({crash.signal_name}) compiling {what} for {accelerator}{hint}")
    failed = find_cause(err, VelaFailed)
    if failed is not None:
        return UserError(f"ethos-u: Vela could not compile {what} for {accelerator}: {failed}")
    return None


# --- Vela's estimate -------------------------------------------------------------------------------------------------

def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, skipinitialspace=True))


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0
    except ValueError:
        return 0.0


def read_partition_estimate(folder: Path) -> dict[str, Any]:
    """One Vela run's `*_summary_<system>.csv` and `*_per-layer.csv` -> totals and per-op rows."""
    summaries = sorted(folder.glob("*_summary_*.csv"))
    if not summaries:
        raise UserError(f"vela: no summary CSV in {str(folder)!r} (Vela ran without --verbose-performance?)")
    s = _read_csv(summaries[0])[0]
    clock_hz = _num(s.get("core_clock"))
    ops = []
    for per_layer in sorted(folder.glob("*per-layer.csv")):
        for row in _read_csv(per_layer):
            cycles = _num(row.get("Op Cycles"))
            ops.append({"op": row.get("Original Operator") or "?", "name": row.get("Name", ""),
                        "target": row.get("Target", ""), "cycles": cycles, "macs": _num(row.get("MAC Count")),
                        "time_ms": cycles / clock_hz * 1e3 if clock_hz else 0.0})
    return {
        "cycles": _num(s.get("cycles_total")),
        "inference_time_ms": _num(s.get("inference_time")) * 1e3,
        "nn_macs": _num(s.get("nn_macs")),
        "sram_kib": _num(s.get("sram_memory_used")),
        "off_chip_flash_kib": _num(s.get("off_chip_flash_memory_used")),
        "core_clock_hz": clock_hz,
        "system_config": s.get("system_config", ""),
        "memory_mode": s.get("memory_mode", ""),
        "ops": ops,
    }


def summarize_estimate(runs: VelaRuns, accelerator: str) -> dict[str, Any]:
    """Totals over every delegated partition (one Vela run each)."""
    parts = [read_partition_estimate(p) for p in runs.partitions]
    return {
        "accelerator": accelerator,
        "partitions": len(parts),
        "cycles": sum(p["cycles"] for p in parts),
        "inference_time_ms": sum(p["inference_time_ms"] for p in parts),
        "nn_macs": sum(p["nn_macs"] for p in parts),
        "sram_kib": max((p["sram_kib"] for p in parts), default=0.0),
        "core_clock_hz": parts[0]["core_clock_hz"] if parts else 0.0,
        "system_config": parts[0]["system_config"] if parts else "",
        "memory_mode": parts[0]["memory_mode"] if parts else "",
        "ops": [op for p in parts for op in p["ops"]],
    }


# --- lowering --------------------------------------------------------------------------------------------------------

def lower(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target: str,
    metadata: dict[str, Any] | None = None,
    what: str = "model",
    artifacts: str | os.PathLike | None = None,
) -> LoweredProgram:
    """Export at batch 1, partition for the Ethos-U `target`, compile with Vela (in a child process) and serialise.

    `module` should be int8 already (`quantize`): the NPU runs int8 only, fp32 ops stay on the CPU. The estimate is
    stored in the `.pte` as the `vela_estimate` constant method; Vela's CSVs are kept under `artifacts` if given.
    """
    from executorch.backends.arm import EthosUPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    accelerator = accelerator_of(target)
    metadata = check_metadata(metadata)
    exported = export_batch_one(module, example_inputs)
    with contextlib.ExitStack() as stack:
        root = Path(artifacts) if artifacts is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if root.exists():
            shutil.rmtree(root)  # a re-export must not mix in an older run's partitions
        try:
            with vela_in_subprocess(root) as runs:
                edge = to_edge_transform_and_lower(
                    exported, partitioner=[EthosUPartitioner(compile_spec(accelerator))],
                    compile_config=EdgeCompileConfig(_check_ir_validity=False), constant_methods=metadata or None,
                )
        except Exception as err:  # noqa: BLE001 - the Arm backend re-wraps what Vela raised
            user_error = vela_user_error(err, what, accelerator)
            if user_error is None:
                raise
            raise user_error from None
        estimate = summarize_estimate(runs, accelerator)
    delegation = delegation_summary(edge.exported_program().graph_module)
    metadata[ESTIMATE_METHOD] = json.dumps({k: v for k, v in estimate.items() if k != "ops"} | {
        "ops": [[o["op"], o["name"], o["cycles"], o["macs"]] for o in estimate["ops"]]}, separators=(",", ":"))
    edge._config_methods = dict(metadata)  # the estimate exists only after Vela ran; ExecuTorch 1.5.1 keeps them here
    program = edge.to_executorch()
    return LoweredProgram(program.buffer, delegation, target, metadata, estimate)
