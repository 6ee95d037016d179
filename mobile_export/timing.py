"""Timing a `.pte` on this host: the one place latencies are measured and summarised.

Every latency figure of the project comes from here: `bench --device host` (mobile_export.bench.host), the search's
latency table (compress.search.latency), a run's eval of its own export, and the delegation report's ETDump time
shares (mobile_export.bundle.delegation). The statistics use the metric names and definitions of ExecuTorch's
Android benchmark app (minibench: `model_load_time(ms)`, `avg_inference_latency(ms)`,
`trimmean_inference_latency(ms)`), plus median and p90, so host and phone numbers land in the same columns.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from compress.errors import UserError
from mobile_export.pte_check import check_pte
from mobile_export.runtime import PteModule, _runtime


def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_latencies(latencies_ms: list[float], load_ms: float) -> dict[str, Any]:
    """Minibench's definitions: trimmed mean over the middle 80% (sorted[n/10 : 9n/10]); plus median and p90."""
    ordered = sorted(latencies_ms)
    n = len(ordered)
    trimmed = ordered[n // 10 : n * 9 // 10] or ordered
    return {
        "model_load_time(ms)": load_ms,
        "avg_inference_latency(ms)": statistics.fmean(ordered),
        "trimmean_inference_latency(ms)": statistics.fmean(trimmed),
        "median_inference_latency(ms)": statistics.median(ordered),
        "p90_inference_latency(ms)": percentile(ordered, 0.9),
        "runs": n,
    }


def time_runs(module: PteModule, row: tuple[torch.Tensor, ...], runs: int, warmup: int) -> list[float]:
    """Per-call latencies (ms) of `runs` executions of `row`, after `warmup` untimed ones."""
    for _ in range(warmup):
        module.run_once(*row)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        module.run_once(*row)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def timed_load(path: Path, method: str = "forward") -> tuple[PteModule, float]:
    """Load time of program + method, as minibench measures it (the file check and one-time runtime set-up are
    done before the clock starts)."""
    check_pte(path)
    _runtime()
    start = time.perf_counter()
    module = PteModule(path, method, verify_file=False)
    return module, (time.perf_counter() - start) * 1e3


def host_latency(
    path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 20, warmup: int = 3
) -> dict[str, Any]:
    """Load time (program + method, as minibench measures it) and per-call latency of the batch-1 method."""
    if runs < 1 or warmup < 0:
        raise UserError(f"bench: runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    module, load_ms = timed_load(Path(path))
    row = tuple(t[:1].contiguous() for t in inputs)
    return summarize_latencies(time_runs(module, row, runs, warmup), load_ms)


def profile_ops(path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 5,
                method: str = "forward") -> list[dict[str, Any]]:
    """Per-op time from an ETDump (ExecuTorch devtools), slowest first: portable-kernel ops (what the delegate left
    out), each XNNPACK delegate call, and the XNNPACK operators inside it. Times are medians over `runs`."""
    import tempfile
    import warnings

    from executorch.devtools import Inspector

    module = PteModule(path, method, enable_etdump=True)
    row = tuple(t[:1].contiguous() for t in inputs)
    for _ in range(runs):
        module.run_once(*row)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Output Buffer not found": we ask for timings only, not tensor dumps
        etdump = os.path.join(tmp, "run.etdp")
        module.program.write_etdump_result_to_file(etdump, os.path.join(tmp, "debug.bin"))
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
