"""Two searches of one recipe side by side (issue 20: the same search on an idle host and with one core kept busy).

    python -m bench.search_compare bench/out/search_idle bench/out/search_loaded [--json bench/out/search_compare.json]

Per candidate measured in both: int8 ms and int8 ratio (candidate / reference, same sitting) in each, and how much
each moved; whether the budget decision (fits / over) and the pool, the proxy scores and the winner agree.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from compress.atomic import write_json


def load(folder: Path) -> tuple[dict, dict]:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    rows = {}
    for line in (folder / "candidates.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        rows[r["name"]] = r
    return summary, rows


def compare(a: Path, b: Path) -> dict:
    sa, ra = load(a)
    sb, rb = load(b)
    both = sorted(n for n in ra if n in rb and ra[n]["int8_ratio"] is not None and rb[n]["int8_ratio"] is not None)
    per = {}
    for n in both:
        x, y = ra[n], rb[n]
        per[n] = {"int8_ms": [x["int8_ms"], y["int8_ms"]], "int8_ratio": [x["int8_ratio"], y["int8_ratio"]],
                  "ms_shift": round(y["int8_ms"] / x["int8_ms"] - 1, 4),
                  "ratio_shift": round(y["int8_ratio"] / x["int8_ratio"] - 1, 4),
                  "reference_ms": [x["reference_int8_ms"], y["reference_int8_ms"]],
                  "same_decision": (x["int8_ratio"] <= 1.0) == (y["int8_ratio"] <= 1.0)}
    pool = lambda rows: sorted(n for n, r in rows.items() if r["proxy_top1"] is not None)  # noqa: E731
    wa, wb = sa["towers"]["image"]["winner"], sb["towers"]["image"]["winner"]
    return {
        "a": str(a), "b": str(b), "measured_in_both": len(both), "measured": [len([r for r in ra.values() if r["int8_ratio"] is not None]),
                                                                         len([r for r in rb.values() if r["int8_ratio"] is not None])],
        "same_measured_set": sorted(n for n, r in ra.items() if r["int8_ratio"] is not None)
        == sorted(n for n, r in rb.items() if r["int8_ratio"] is not None),
        "same_decisions": all(p["same_decision"] for p in per.values()),
        "trained": [len(pool(ra)), len(pool(rb))], "same_pool": pool(ra) == pool(rb),
        "same_proxy_scores": all(ra[n]["proxy_top1"] == rb[n]["proxy_top1"] for n in pool(ra) if n in rb),
        "winner": [wa and wa["name"], wb and wb["name"]], "same_winner": (wa and wa["name"]) == (wb and wb["name"]),
        "median_abs_ms_shift": round(statistics.median(abs(p["ms_shift"]) for p in per.values()), 4),
        "median_abs_ratio_shift": round(statistics.median(abs(p["ratio_shift"]) for p in per.values()), 4),
        "max_abs_ratio_shift": round(max(abs(p["ratio_shift"]) for p in per.values()), 4),
        "seconds": [sa["seconds"], sb["seconds"]], "candidates": per,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--json", type=Path, default=Path("bench/out/search_compare.json"))
    args = ap.parse_args(argv)
    for f in (args.a, args.b):
        if not (f / "summary.json").is_file():
            print(f"error: {f}: no search summary.json; run `dcclip-compress search RECIPE --out {f}` first", file=sys.stderr)
            raise SystemExit(2)
    result = compare(args.a, args.b)
    write_json(args.json, result)
    print(json.dumps({k: v for k, v in result.items() if k != "candidates"}, indent=1))


if __name__ == "__main__":
    main()
