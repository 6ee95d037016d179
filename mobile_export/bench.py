"""Host latency of a `.pte` through the ExecuTorch runtime, reported with the metric names of ExecuTorch's Android
benchmark app (minibench), so host and phone numbers land in the same report columns."""
from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from compress.errors import UserError
from mobile_export.runtime import PteModule, _runtime


def summarize_latencies(latencies_ms: list[float], load_ms: float) -> dict[str, Any]:
    """Minibench's definitions: trimmed mean over the middle 80% (sorted[n/10 : 9n/10])."""
    ordered = sorted(latencies_ms)
    n = len(ordered)
    trimmed = ordered[n // 10 : n * 9 // 10] or ordered
    return {
        "model_load_time(ms)": load_ms,
        "avg_inference_latency(ms)": statistics.fmean(ordered),
        "trimmean_inference_latency(ms)": statistics.fmean(trimmed),
        "median_inference_latency(ms)": statistics.median(ordered),
        "runs": n,
    }


def host_latency(
    path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 20, warmup: int = 3
) -> dict[str, Any]:
    """Load time (program + method, as minibench measures it) and per-call latency of the batch-1 method."""
    if runs < 1 or warmup < 0:
        raise UserError(f"bench: runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    _runtime()  # one-time library registration is not part of the model's load time
    start = time.perf_counter()
    module = PteModule(path)
    load_ms = (time.perf_counter() - start) * 1e3
    row = tuple(t[:1].contiguous() for t in inputs)
    for _ in range(warmup):
        module.run_once(*row)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        module.run_once(*row)
        latencies.append((time.perf_counter() - start) * 1e3)
    return summarize_latencies(latencies, load_ms)


def profile_ops(path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 5) -> list[dict[str, Any]]:
    """Per-op time from an ETDump (ExecuTorch devtools), slowest first: portable-kernel ops (what the delegate left
    out), each XNNPACK delegate call, and the XNNPACK operators inside it. Times are medians over `runs`."""
    import tempfile
    import warnings

    from executorch.devtools import Inspector

    program = _runtime().load_program(str(path), enable_etdump=True)
    method = program.load_method("forward")
    row = [t[:1].contiguous() for t in inputs]
    for _ in range(runs):
        method.execute(row)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Output Buffer not found": we ask for timings only, not tensor dumps
        etdump = os.path.join(tmp, "run.etdp")
        program.write_etdump_result_to_file(etdump, os.path.join(tmp, "debug.bin"))
        inspector = Inspector(etdump_path=etdump)
    rows = []
    for block in inspector.event_blocks:
        for event in block.events:
            if event.perf_data is None or event.name in ("Program::load_method", "Method::init"):
                continue
            rows.append({
                "event": event.name,
                "delegated": bool(event.is_delegated_op),
                "median_ms": float(event.perf_data.p50),
                "calls": len(event.perf_data.raw),
            })
    return sorted(rows, key=lambda r: -r["median_ms"])
