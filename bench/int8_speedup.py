"""int8 vs fp32 `.pte` of the search's winner and of the reference, timed side by side in one process (issue 20).

    python -m bench.int8_speedup [--search bench/out/search_idle] [--reference mobilevit_xxs] [--runs 300]
                                 [--rounds 10] [--threads 1] [--json bench/out/int8_speedup.json] [--docs]
        ->  bench/out/int8_speedup.json (with --docs also docs/results/int8_speedup.json)

Each tower is built at its trained input size and lowered exactly as the search and `export` lower it (XNNPACK; int8
through the headline post-training verb, calibrated on random batches: latency does not depend on the weights'
values). Its fp32 and int8 programs are then loaded together and timed batch-1 in `--rounds` alternating blocks on
the ExecuTorch runtime at `--threads` XNNPACK threads, so any load drift lands on both; the speed-up is the ratio of
the medians.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from compress.atomic import write_json
from compress.errors import UserError, one_line


def towers(search: Path, reference: str):
    """The search's image winner (read as bench.search_winner reads it) and the reference at the headline 64 px."""
    from bench.search_winner import SEARCH_FIX, winner_from_summary
    from compress.readers import read_json
    from compress.search.latency import NamedCandidate
    from students.spaces import ImageCandidate

    path = search / "summary.json"
    spec, size, _ = winner_from_summary(read_json(path, "search summary", SEARCH_FIX), str(path))
    return {"winner": ImageCandidate(spec["family"], size, {k: v for k, v in spec.items() if k != "family"}),
            "reference": NamedCandidate(reference, "image", 64)}  # the headline size, as the budget times it


def speedup(cand, runs: int, rounds: int, threads: int, embed_dim: int = 128) -> dict:
    from compress.search.latency import build_tower, example_input, lower_candidate, time_interleaved

    tower = build_tower(cand, embed_dim, 4096)
    progs = {q: lower_candidate(tower, cand, q, 4096)[0] for q in ("fp32", "int8")}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {q: Path(tmp) / f"{q}.pte" for q in progs}
        for q, p in paths.items():
            p.write_bytes(progs[q].buffer)
        ex = example_input(cand, 1, 4096)
        int8, fp32 = time_interleaved(paths["int8"], paths["fp32"], ex, ex, runs, rounds, threads)
    f, i = fp32["median_inference_latency(ms)"], int8["median_inference_latency(ms)"]
    return {"name": cand.name(), "image_size": cand.image_size, "fp32_ms": round(f, 4), "int8_ms": round(i, 4),
            "speedup": round(f / i, 3), "fp32_p90_ms": round(fp32["p90_inference_latency(ms)"], 4),
            "int8_p90_ms": round(int8["p90_inference_latency(ms)"], 4), "runs": runs, "rounds": rounds,
            "pte_mb": {q: round(p.size_bytes / 1e6, 3) for q, p in progs.items()},
            "non_delegated_ops": {q: p.delegation.get("non_delegated_ops", {}) for q, p in progs.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", type=Path, default=Path("bench/out/search_idle"))
    ap.add_argument("--reference", default="mobilevit_xxs")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("bench/out/int8_speedup.json"))
    ap.add_argument("--docs", action="store_true")
    args = ap.parse_args(argv)
    try:
        result = {"command": "python -m bench.int8_speedup " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "threads": args.threads, "search": str(args.search),
                  "towers": {k: speedup(c, args.runs, args.rounds, args.threads) for k, c in towers(args.search, args.reference).items()}}
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        raise SystemExit(2)
    write_json(args.json, result)
    if args.docs:
        write_json(Path("docs/results/int8_speedup.json"), result)
    for k, t in result["towers"].items():
        print(f"{k}: {t['name']} fp32 {t['fp32_ms']:.3f} ms, int8 {t['int8_ms']:.3f} ms -> {t['speedup']:.2f}x")


if __name__ == "__main__":
    main()
