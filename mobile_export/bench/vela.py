"""`bench --device vela`: Arm's Vela compiler estimate for Ethos-U programs, reported in the bench schema.

Nothing on this machine can run an Ethos-U program, so `mobile_export.lower.ethosu.lower` stores Vela's estimate
(cycles and time per op at the accelerator's clock) in the `.pte` as the `vela_estimate` constant method. This file
reads it back from any `.pte`, under the metric names host and phone numbers use (`source: estimate`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compress.atomic import sha256_file
from compress.errors import UserError
from mobile_export.bench.schema import (
    BenchRun,
    BenchSettings,
    DeviceInfo,
    MethodLatency,
    ModelResult,
    OpTime,
    TensorSpec,
)
from mobile_export.lower.ethosu import ESTIMATE_METHOD
from mobile_export.pte_check import check_pte
from mobile_export.runtime import _SCALAR_TYPES, _runtime


def read_estimate(path: str | os.PathLike) -> dict[str, Any]:
    """The Vela estimate stored in an Ethos-U `.pte` (its `vela_estimate` constant method)."""
    path = Path(path)
    check_pte(path)  # a damaged file is a one-line error before the runtime sees it
    try:
        program = _runtime().load_program(str(path))
    except RuntimeError:
        raise UserError(f"vela: {str(path)!r} is not a readable .pte; re-export it with --target ethos-u85") from None
    if ESTIMATE_METHOD not in program.method_names:
        raise UserError(f"vela: {str(path)!r} holds no Vela estimate (not exported for Ethos-U); "
                        "export it with `dcclip-compress export RUN --target ethos-u85`")
    estimate = json.loads(program.load_method(ESTIMATE_METHOD).execute([])[0])
    estimate["ops"] = [{"op": op, "name": name, "cycles": cycles, "macs": macs,
                        "time_ms": cycles / estimate["core_clock_hz"] * 1e3 if estimate.get("core_clock_hz") else 0.0}
                       for op, name, cycles, macs in estimate["ops"]]
    return estimate


def top_ops(estimate: dict[str, Any], n: int | None = None) -> list[dict[str, Any]]:
    """Vela's per-op cycles summed by operator type, slowest first, in `profile_ops`' row shape."""
    by_op: dict[str, dict[str, Any]] = {}
    for op in estimate["ops"]:
        row = by_op.setdefault(op["op"], {"event": op["op"], "delegated": True, "median_ms": 0.0, "calls": 0,
                                          "cycles": 0.0, "macs": 0.0})
        row["median_ms"] += op["time_ms"]
        row["cycles"] += op["cycles"]
        row["macs"] += op["macs"]
        row["calls"] += 1
    rows = sorted(by_op.values(), key=lambda r: (-r["cycles"], r["event"]))
    return rows[:n] if n else rows


def estimate_metrics(estimate: dict[str, Any]) -> dict[str, Any]:
    """The estimate under minibench's metric names (host and phone reports use the same columns). Vela's figure is
    deterministic, so mean, trimmed mean, median and p90 coincide; NPU load time is not estimated (None). CPU-side
    ops (input quantize, output dequantize, int64 casts) are not in it."""
    ms = float(estimate["inference_time_ms"])
    return {
        "model_load_time(ms)": None,
        "avg_inference_latency(ms)": ms,
        "trimmean_inference_latency(ms)": ms,
        "median_inference_latency(ms)": ms,
        "p90_inference_latency(ms)": ms,
        "runs": 1,
        "source": "vela-estimate",
        "accelerator": estimate["accelerator"],
        "npu_cycles": estimate["cycles"],
        "npu_macs": estimate["nn_macs"],
        "sram_kib": estimate["sram_kib"],
        "system_config": estimate.get("system_config", ""),
        "npu_partitions": estimate["partitions"],
    }


def _input_specs(path: Path) -> list[dict[str, Any]]:
    """forward's input shapes/dtypes from the program's metadata (the method itself cannot load without an NPU)."""
    meta = _runtime().load_program(str(path)).metadata("forward")
    specs = []
    for i in range(meta.num_inputs()):
        info = meta.input_tensor_meta(i)
        specs.append({"shape": list(info.sizes()), "dtype": str(_SCALAR_TYPES.get(info.dtype(), info.dtype())).removeprefix("torch.")})
    return specs


def bench_vela(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """`bench --device vela`: one `ModelResult` per program from its stored Vela estimate (same schema as host and
    phone runs, `source: estimate`, top ops from Vela's per-op cycles)."""
    from importlib.metadata import version

    if arg:
        raise UserError(f"bench: the vela device takes no argument (got 'vela:{arg}'); the accelerator is the one "
                        "the .pte was exported for")
    models, accelerators = [], set()
    for path in programs:
        estimate = read_estimate(path)
        accelerators.add(estimate["accelerator"])
        m = estimate_metrics(estimate)
        total = estimate["inference_time_ms"] or 1.0
        ops = [OpTime(event=r["event"], kind="delegated", occurrences=r["calls"], median_ms=r["median_ms"],
                      share=r["median_ms"] / total) for r in top_ops(estimate, 12)]
        models.append(ModelResult(
            model=path.stem, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
            methods=[MethodLatency(
                method="forward", source="estimate", inputs=[TensorSpec(**s) for s in _input_specs(path)], runs=1,
                **{k: m[k] for k in ("model_load_time(ms)", "avg_inference_latency(ms)",
                                     "trimmean_inference_latency(ms)", "median_inference_latency(ms)",
                                     "p90_inference_latency(ms)")},
            )],
            top_ops=ops,
            notes=[f"Vela {estimate['accelerator']} ({estimate.get('system_config', '')}) estimate: "
                   f"{estimate['cycles']:.0f} NPU cycles, {estimate['nn_macs'] / 1e6:.2f} M MACs, "
                   f"{estimate['sram_kib']:.0f} KiB SRAM, {estimate['partitions']} NPU partition(s); CPU-side ops "
                   "(input quantize, output dequantize, int64 casts) are not in it"],
        ))
    device = DeviceInfo(name="vela", kind="estimate", model=", ".join(sorted(accelerators)),
                        versions={"ethos-u-vela": version("ethos-u-vela"), "tosa-tools": version("tosa-tools")},
                        extra={"note": "compiler cycle estimate, not a measurement"})
    return BenchRun(device, models)
