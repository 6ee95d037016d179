"""bench/full_size.py's bookkeeping (no teacher, no subprocess): the counts it picks per device, how it reads a
command's log, a cache manifest and a run folder, and the markdown table. The rehearsal itself is
`python -m bench.full_size --tiny` (minutes) and, at full size, about 45 minutes."""
from __future__ import annotations

import argparse
import csv
import json

import pytest

from bench import full_size as fs


def _args(**given) -> argparse.Namespace:
    keys = ("pairs", "steps", "batch_size", "cache_samples", "views", "cache_batch_size", "workers", "pooled_grid")
    return argparse.Namespace(tiny=given.pop("tiny", False), **{k: given.get(k) for k in keys})


def test_counts_are_the_issues_on_a_gpu_and_scaled_on_the_cpu() -> None:
    gpu = fs.resolve_counts(_args(), "cuda", 16)
    assert (gpu["cache_samples"], gpu["steps"], gpu["cache_steps"], gpu["pairs"]) == (2000, 50, 50, 20000)
    cpu = fs.resolve_counts(_args(), "cpu", 2)
    assert cpu["steps"] == 50 and cpu["cache_samples"] == cpu["stage_pairs"] == 200 and cpu["views"] == 2
    assert "scaled" in cpu["why"] and "changed" not in cpu["why"]
    mine = fs.resolve_counts(_args(steps=10, batch_size=8), "cpu", 2)  # the cache follows steps x batch
    assert mine["cache_samples"] == 80 and "changed on the command line" in mine["why"]
    with pytest.raises(SystemExit, match="--pairs"):
        fs.resolve_counts(_args(pairs=100), "cpu", 2)


def test_log_lines_set_the_stage() -> None:
    assert fs.phase_of("▶ distill\n", "teacher") == "distill"
    assert fs.phase_of("teacher cache /tmp/c: 1.5 MB per view x 1 views x 200 samples", "load") == "compute"
    assert fs.phase_of("cache teacher features: done (13 steps)", "compute") == "manifest"
    assert fs.phase_of("stage 1: distill: epoch 1/1 loss 2.0", "distill") == "distill"


def test_cache_and_stage_numbers(tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    tensors = {"image_embedding": {"dtype": "F16", "shape": [768]}, "map_0": {"dtype": "F16", "shape": [1024, 4, 4]},
               "has_en": {"dtype": "U8", "shape": []}}
    (cache / "manifest.json").write_text(json.dumps({"tensors": tensors, "samples": 10, "views": 2, "rows": 20,
                                                     "bytes": 12345, "shards": [{}]}))
    measured = {"seconds": 30.0, "peak_rss_mb": 900.0, "phase_peak_rss_mb": {"compute": 800.0, "distill": 500.0},
                "phase_start_s": {"load": 0.0, "compute": 10.0, "manifest": 20.0}}
    got = fs.cache_numbers(cache, measured)
    assert got["bytes_per_view"] == 2 * 768 + 2 * 1024 * 16 + 1 and got["views_per_s"] == 2.0
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({"timings_s": {"distill": 12.0}, "training": {
        "distill": {"steps": 4, "seconds": 8.0, "batch": {"global_batch": 4}}}}))
    with (run / "logs" / "scalars.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["stage", "step", "images_per_s"])
        w.writeheader()
        w.writerows({"stage": "distill", "step": i, "images_per_s": v} for i, v in enumerate([1.0, 4.0, 2.0, 3.0], 1))
    stage = fs.stage_numbers(run, "distill", measured)
    assert (stage["steps_per_s"], stage["images_per_s"], stage["seconds"], stage["peak_rss_mb"]) == (0.5, 3.0, 12.0, 500.0)
    result = {"command": "python -m bench.full_size", "tiny": False, "device": {"name": "CPU", "precision": "fp32"},
              "host": {"cpus": 2, "ram_gb": 23.0}, "counts": fs.resolve_counts(_args(), "cpu", 2),
              "teacher": {"params": 864_000_000, "folder_bytes": 3.4e9}, "corpus": {"pairs": 20000, "shards": 20},
              "cache": {"full": got, "none": {"failed": True}}, "stages": {"stage 1 online": stage},
              "seconds": 100.0, "peak_rss_mb": 900.0, "acceptance": {"met": True, "why": []}}
    table = fs.markdown(result)
    assert "| full | 34,305 | 2.00 |" in table and "| none | failed |" in table and "| stage 1 online | 4 | 0.500 |" in table
