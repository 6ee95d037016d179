"""Does proxy training on the other core bias the search's latency measurements? (issue 20, "both cores")

    python -m bench.search_pinning [--candidates 5] [--runs 200] [--rounds 10] [--repeats 3]
                                   [--json bench/out/search_pinning.json] [--docs]
        ->  bench/out/search_pinning.json (with --docs also docs/results/search_pinning.json)

The search measures in a process pinned to the last core while it proxy-trains pinned to the others
(compress/search/runner.py `_Cores`). This bench lowers a few candidates of the search space at int8 (and the
reference, mobilevit_xxs at 64 px), pins itself to the last core, and times every candidate against the reference
(`time_interleaved`, as the search does) under three conditions, in turn, `--repeats` times:

- `idle`: nothing else of ours runs;
- `train_other_core`: a proxy-training stand-in (a MobileViT tower's forward + backward + step at batch 64, one torch
  thread) pinned to the other core(s): the search's own arrangement;
- `train_same_core`: the same load pinned to the timing core: what an unpinned, busy machine can do to a timing.

It reports, per candidate and condition, the median ms of the candidate and of the reference and their ratio, and
each condition's ratio relative to `idle`. Pinning is unbiased if `train_other_core` moves the ratios no more than
`idle` moves between its own repeats.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compress.atomic import write_json


def _load(cpu: set[int], stop) -> None:
    """A proxy-training stand-in: stage-1-sized steps on a MobileViT tower, one thread, pinned to `cpu`."""
    import torch

    from students.registry import create_image_tower

    os.sched_setaffinity(0, cpu)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tower = create_image_tower("mobilevit_xxs", 128, 64)
    opt = torch.optim.AdamW(tower.parameters(), 1e-3)
    x = torch.rand(64, 3, 64, 64)
    while not stop.is_set():
        loss = tower(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("bench/out/search_pinning.json"))
    ap.add_argument("--docs", action="store_true")
    args = ap.parse_args(argv)
    from compress.search.latency import NamedCandidate, build_tower, example_input, lower_candidate, time_interleaved
    from students.spaces import IMAGE_FAMILIES, ImageSpace, sample_image_candidates

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("error: bench.search_pinning needs 2 or more cores (the search measures inline on one)", file=sys.stderr)
        raise SystemExit(2)
    timing_core, other = cores[-1], set(cores[:-1])
    ref = NamedCandidate("mobilevit_xxs", "image", 64)
    cands = sample_image_candidates(ImageSpace(IMAGE_FAMILIES, (64,)), args.candidates, 0)
    os.sched_setaffinity(0, {timing_core})
    import torch

    torch.set_num_threads(1)
    result: dict = {"command": "python -m bench.search_pinning " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "timing_core": timing_core, "other_cores": sorted(other), "runs": args.runs, "rounds": args.rounds,
                    "repeats": args.repeats, "reference": ref.name(), "candidates": {}}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for c in [ref, *cands]:
            t0 = time.perf_counter()
            program, _ = lower_candidate(build_tower(c, 128, 4096), c, "int8", 4096)
            paths[c.name()] = Path(tmp) / f"{c.name()}.pte"
            paths[c.name()].write_bytes(program.buffer)
            print(f"lowered {c.name()} ({time.perf_counter() - t0:.0f}s)", flush=True)
        samples: dict[str, dict[str, list]] = {c.name(): {} for c in cands}
        conditions = {"idle": None, "train_other_core": other, "train_same_core": {timing_core}}
        for rep in range(args.repeats):
            for cond, load_cpu in conditions.items():
                stop, proc = ctx.Event(), None
                if load_cpu is not None:
                    proc = ctx.Process(target=_load, args=(load_cpu, stop), daemon=True)
                    proc.start()
                    time.sleep(8)  # past the load's imports and first steps
                for c in cands:
                    ex = example_input(c, 1, 4096)
                    cb, rb = time_interleaved(paths[c.name()], paths[ref.name()], ex, example_input(ref, 1, 4096),
                                              args.runs, args.rounds, 1)
                    ms, ref_ms = cb["median_inference_latency(ms)"], rb["median_inference_latency(ms)"]
                    samples[c.name()].setdefault(cond, []).append((ms, ref_ms, ms / ref_ms))
                if proc is not None:
                    stop.set()
                    proc.join(30)
                print(f"repeat {rep + 1}/{args.repeats}: {cond} done", flush=True)
    shifts: dict[str, list[float]] = {k: [] for k in conditions}
    for name, by in samples.items():
        idle_ratio = statistics.median(s[2] for s in by["idle"])
        row = {}
        for cond, ss in by.items():
            ratio = statistics.median(s[2] for s in ss)
            row[cond] = {"ms": round(statistics.median(s[0] for s in ss), 4),
                         "ref_ms": round(statistics.median(s[1] for s in ss), 4), "ratio": round(ratio, 4),
                         "ratios": [round(s[2], 4) for s in ss], "ratio_vs_idle": round(ratio / idle_ratio - 1, 4)}
            shifts[cond].append(abs(ratio / idle_ratio - 1))
        # idle's own spread: how far its repeats stray from their median (the noise floor)
        row["idle"]["repeat_spread"] = round(max(abs(r / idle_ratio - 1) for r in row["idle"]["ratios"]), 4)
        result["candidates"][name] = row
    result["summary"] = {
        "idle_repeat_spread_median": round(statistics.median(r["idle"]["repeat_spread"] for r in result["candidates"].values()), 4),
        **{f"{k}_abs_ratio_shift_median": round(statistics.median(v), 4) for k, v in shifts.items() if k != "idle"},
        **{f"{k}_abs_ratio_shift_max": round(max(v), 4) for k, v in shifts.items() if k != "idle"},
        "ms_shift_median": {cond: round(statistics.median(r[cond]["ms"] / r["idle"]["ms"] - 1 for r in result["candidates"].values()), 4)
                            for cond in conditions},
    }
    write_json(args.json, result)
    if args.docs:
        write_json(Path("docs/results/search_pinning.json"), result)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
