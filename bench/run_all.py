"""Benchmarks that write JSON: fp32 vs int8 `.pte` latency and size, measured side by side in one process.

    python -m bench.run_all [RUN_DIR] [--runs N]   ->  bench/out/pte_latency.json

Runs are interleaved (fp32, int8, fp32, int8, ...) so that machine noise hits both sides alike; the ratio is the
number to trust, not the absolute milliseconds of a shared 2-core host.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from compress.atomic import write_json
from mobile_export.runtime import PteModule


def _inputs(tower: str, bundle: dict) -> tuple[torch.Tensor]:
    if tower == "image":
        return (torch.rand(1, 3, bundle["image_size"], bundle["image_size"]),)
    ids = torch.randint(2, 100, (1, bundle["context_length"]))
    ids[:, bundle["context_length"] // 2 :] = bundle["pad_id"]
    return (ids,)


def bench_run(run_dir: Path, runs: int = 50, warmup: int = 5) -> dict:
    export = run_dir / "export"
    bundle = json.loads((export / "bundle.json").read_text(encoding="utf-8"))
    result: dict = {"run": str(run_dir), "host": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "runs": runs, "towers": {}}
    for tower in ("image", "text"):
        mods = {q: PteModule(export / f"{tower}_{q}.pte") for q in ("fp32", "int8")}
        x = _inputs(tower, bundle)
        times: dict[str, list[float]] = {q: [] for q in mods}
        for _ in range(warmup):
            for m in mods.values():
                m(*x)
        for _ in range(runs):
            for q, m in mods.items():
                t0 = time.perf_counter()
                m(*x)
                times[q].append((time.perf_counter() - t0) * 1e3)
        med = {q: statistics.median(v) for q, v in times.items()}
        size = {q: (export / f"{tower}_{q}.pte").stat().st_size for q in mods}
        result["towers"][tower] = {
            "median_ms": med, "pte_bytes": size,
            "int8_speedup": med["fp32"] / med["int8"], "int8_size_ratio": size["int8"] / size["fp32"],
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", default="runs/mobilevit_int8")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", default="bench/out/pte_latency.json")
    a = p.parse_args()
    run = Path(a.run_dir)
    if not (run / "export" / "bundle.json").is_file():
        raise SystemExit(f"error: {run} has no export/bundle.json; run `make run` (or dcclip-compress run RECIPE) first")
    res = bench_run(run, a.runs)
    write_json(a.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
