"""The architecture search's winner against the reference image student, both trained with the headline stages (issue 20).

    python -m bench.search_winner [--search runs/search_mobile/search] [--spec-json '{...}' --image-size N]
                                  [--reference ARCH] [--recipe recipes/mobilevit_int8.yaml] [--seeds 0,1,2]
                                  [--split-seed 0] [--out bench/out/ablation] [--json bench/out/search_winner.json]
                                  [--docs]
        ->  bench/out/search_winner.json, bench/out/search_winner.md (with --docs also docs/results/search_winner.json)

The winner is the image tower's winner of a search (`<search>/summary.json`: `towers.image.winner`, its `spec` and
`image_size`), or the spec given as `--spec-json` (at `--image-size`, default the recipe's). Two rows of the headline
recipe, each at every `--seeds` and the one `--split-seed`, QAT and export off, through `bench.ablation`'s runner:

- reference: the recipe with `bench.ablation.BOTH` (K's images and K's text, unpaired) - exactly the ablation's
  `dcclip_both` row, so with the default `--out` (the ablation's folder) its finished runs are read, not retrained;
  `--reference ARCH` (another registry image student) swaps the image tower;
- winner: the same, with the image student `arch: custom` + the winner's spec and `data.image_size` at its size.

Reported on `known` and `eval`, en and zh (the ablation's statistics, compress/eval/stats.py): top-1 mean ± sd over
the seeds per row; the paired difference winner − reference (points) with a 95% interval from a bootstrap over classes
(the items of every seed pooled, resampled by class) - the primary interval - and the t-interval of the per-seed
differences; and whether each interval lies above 0. Both rows share the split seed's renders and items, so they
pair item by item. Each run's wall seconds (its wall.json) are recorded with it.

A run already finished is read, not retrained, and a killed run resumes from its own checkpoints (bench.ablation's
`run_one`), so the bench survives being stopped and started again. It holds the out folder's lock: it does not run
beside `bench.ablation` on the same folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from compress.errors import UserError, one_line

SPLITS = ("known", "eval")
LANGS = ("en", "zh")
DEFAULT_SEARCH = Path("runs/search_mobile/search")
SEARCH_FIX = "run the search first (`dcclip-compress search recipes/search_mobile.yaml`) or pass --spec-json"


# ------------------------------------------------------------------------------------------------ the two rows
def winner_from_summary(doc: Any, where: str = "summary.json") -> tuple[dict, int, str]:
    """(spec, image_size, name) of the image tower's winner in a search's summary.json; UserError when it has none."""
    tower = doc.get("towers", {}).get("image") if isinstance(doc, dict) and isinstance(doc.get("towers"), dict) else None
    if not isinstance(tower, dict):
        raise UserError(f"{where}: no image tower (towers.image); {SEARCH_FIX}")
    win = tower.get("winner")
    if not isinstance(win, dict):
        raise UserError(f"{where}: the image tower has no winner (no candidate met the budget); {SEARCH_FIX}")
    spec, size = win.get("spec"), win.get("image_size")
    if not isinstance(spec, dict) or "family" not in spec:
        raise UserError(f"{where}: the image winner has no spec with a family; {SEARCH_FIX}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise UserError(f"{where}: the image winner's image_size {size!r} is not a positive whole number; {SEARCH_FIX}")
    return spec, size, str(win.get("name") or spec_name(spec, size))


def parse_spec_json(text: str) -> dict:
    """--spec-json's value: a JSON object with a family (the arch keys are checked when the recipe loads)."""
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise UserError(one_line(f"--spec-json: not valid JSON ({err}); pass an object such as "
                                 '\'{"family": "mobilevit", ...}\' (a search summary\'s towers.image.winner.spec)')) from None
    if not isinstance(spec, dict) or "family" not in spec:
        raise UserError("--spec-json: expected a JSON object with a \"family\" and its arch keys "
                        "(a search summary's towers.image.winner.spec)")
    return spec


def spec_name(spec: dict, image_size: int) -> str:
    """The search's name for a spec (family_..._rSIZE), or custom_rSIZE when the spec does not name one."""
    try:
        from students.spaces import ImageCandidate

        return ImageCandidate(spec["family"], image_size, {k: v for k, v in spec.items() if k != "family"}).name()
    except (KeyError, TypeError, ValueError, IndexError):
        return f"custom_r{image_size}"


def reference_overrides(recipe_arch: str, reference: str | None) -> list[str]:
    """The reference row: the ablation's dcclip_both overrides, in its order (same recipe -> same run folder), plus
    the image student when `reference` is not the recipe's own."""
    from bench.ablation import BOTH

    extra = [] if reference in (None, recipe_arch) else ["students.image=" + json.dumps({"arch": reference})]
    return [*BOTH, *extra]


def winner_overrides(spec: dict, image_size: int) -> list[str]:
    """The winner row: dcclip_both with the image student set to the spec, at its resolution."""
    from bench.ablation import BOTH

    return [*BOTH, "students.image=" + json.dumps({"arch": "custom", "spec": spec}), f"data.image_size={image_size}"]


def parse_seeds(text: str, flag: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: comma-separated whole numbers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"{flag} {text!r}: at least one seed, each once")
    return seeds


# ------------------------------------------------------------------------------------------------ statistics
def verdicts(comparison: dict) -> dict:
    """Per split and language of `compare(reference, winner)`: the difference, both intervals and where each lies."""
    out: dict = {}
    for split in SPLITS:
        for lang in LANGS:
            e = comparison.get(split, {}).get(lang)
            if e is None:
                continue
            boot, seed_t = e["ci95_class_bootstrap"], e.get("ci95_seed_t")
            out.setdefault(split, {})[lang] = {
                "diff": e["diff"], "ci95_class_bootstrap": boot, "ci95_seed_t": seed_t,
                "above_zero_class_bootstrap": boot[0] > 0, "above_zero_seed_t": None if seed_t is None else seed_t[0] > 0,
                "class_bootstrap": where(boot), "seed_t": None if seed_t is None else where(seed_t)}
    return out


def where(ci: list[float]) -> str:
    return "above 0" if ci[0] > 0 else "below 0" if ci[1] < 0 else "spans 0"


def table(result: dict) -> str:
    """The markdown table: each row's mean ± sd, then winner − reference with its two intervals."""
    cols = [(s, lang) for s in SPLITS for lang in LANGS]
    lines = ["| image student | runs | " + " | ".join(f"{s} {lang}" for s, lang in cols) + " | wall s / run |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    for role in ("reference", "winner"):
        row = result[role]
        n = len(row.get("runs", []))
        cells = []
        for s, lang in cols:
            m, sd = row.get("mean", {}).get(s, {}).get(lang), row.get("sd", {}).get(s, {}).get(lang)
            cells.append("–" if m is None else f"{m:.1f} ± {sd:.1f}" if n > 1 else f"{m:.1f} (1 run)")
        walls = [w for w in row.get("wall_seconds", {}).values() if w is not None]
        wall = f"{sum(walls) / len(walls):.0f}" if walls else "–"
        lines.append(f"| {role} `{row['name']}` | {n or 'not run'} | " + " | ".join(cells) + f" | {wall} |")
    n = len(result["difference"].get("runs", []))
    v = result["verdict"]
    for label, key in (("class-bootstrap", "ci95_class_bootstrap"), ("seed t", "ci95_seed_t")):
        cells = []
        for s, lang in cols:
            e = v.get(s, {}).get(lang)
            ci = None if e is None else e[key]
            cells.append("–" if ci is None else f"{e['diff']:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]")
        lines.append(f"| winner − reference, 95% {label} interval | {n} | " + " | ".join(cells) + " | |")
    cells = []
    for s, lang in cols:
        e = v.get(s, {}).get(lang)
        cells.append("–" if e is None else f"{e['class_bootstrap']} / {e['seed_t'] or '–'}")
    lines.append("| interval (bootstrap / seed t) | | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the bench
def resolve_winner(args, base) -> tuple[dict, int, str, str | None]:
    """(spec, image_size, name, source) from --spec-json / --image-size or the search's summary.json."""
    from compress.readers import read_json

    if args.image_size is not None and args.image_size <= 0:
        raise UserError(f"--image-size {args.image_size}: a positive whole number of pixels")
    if args.spec_json is not None:
        spec = parse_spec_json(args.spec_json)
        size = args.image_size or base.data.image_size
        return spec, size, spec_name(spec, size), None
    path = args.search / "summary.json" if args.search.is_dir() or not args.search.suffix else args.search
    spec, size, name = winner_from_summary(read_json(path, "search summary", SEARCH_FIX), str(path))
    if args.image_size is not None and args.image_size != size:
        size, name = args.image_size, spec_name(spec, args.image_size)
    return spec, size, name, str(path)


def wall_seconds(folder: Path) -> float | None:
    from compress.readers import read_json

    try:
        return float(read_json(folder / "wall.json", "run wall time", "")["seconds"])
    except (UserError, KeyError, TypeError, ValueError):
        return None  # a run trained elsewhere, or its stage 1 copied in: no wall time of its own


def run_row(recipe_path: str, overrides: list[str], seeds: list[int], split_seed: int, out: Path) -> tuple[dict, dict]:
    """One row at each seed (finished runs read): ({(split_seed, seed): per-item correctness}, bookkeeping)."""
    from bench.ablation import load_correct, recipe_for, run_one

    runs, folders, walls = {}, {}, {}
    for s in seeds:
        folder = run_one(recipe_for(recipe_path, overrides, s, split_seed), out)
        runs[(split_seed, s)] = load_correct(folder)
        folders[f"{split_seed}/{s}"], walls[f"{split_seed}/{s}"] = folder.name, wall_seconds(folder)
    return runs, {"run_folders": folders, "wall_seconds": walls}


def bench(args) -> dict:
    from bench.ablation import compare, hold_lock, migrate_run_keys, recipe_for, summarise
    from compress.recipe import load_recipe

    base = load_recipe(args.recipe)
    spec, size, name, source = resolve_winner(args, base)
    ref_arch = args.reference or base.students.image.arch
    rows = {"reference": (ref_arch, reference_overrides(base.students.image.arch, args.reference)),
            "winner": (name, winner_overrides(spec, size))}
    for role, (_, overrides) in rows.items():  # a bad spec or arch: one line now, not after the reference's training
        try:
            recipe_for(args.recipe, overrides, args.seeds[0], args.split_seed)
        except UserError as err:
            raise UserError(f"the {role} row does not load: {err}") from None
    hold_lock(args.out)
    moved = migrate_run_keys(args.out / "runs")
    if moved:
        print(f"bench.search_winner: {moved} run folder(s) renamed to their current keys")
    t0 = time.perf_counter()
    runs, result = {}, {}
    for role, (label, overrides) in rows.items():  # the reference first: it is likely the ablation's, finished
        runs[role], book = run_row(args.recipe, overrides, args.seeds, args.split_seed, args.out)
        result[role] = {"name": label, "overrides": overrides, **book, **summarise(runs[role])}
    result["winner"] |= {"spec": spec, "image_size": size, "source": source or "--spec-json"}
    diff = compare(runs["reference"], runs["winner"])  # b − a: winner − reference
    return {
        "recipe": args.recipe,
        "command": "python -m bench.search_winner " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "seeds": args.seeds, "split_seed": args.split_seed, "splits": list(SPLITS),
        **result,
        "difference": diff,
        "verdict": verdicts(diff),
        "statistics": "per row mean ± sd over seeds; winner − reference (points): 95% class-bootstrap interval "
                      "(primary; items of every seed pooled, resampled by class) and the seed t-interval",
        "bench_seconds_this_call": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--search", type=Path, default=DEFAULT_SEARCH, help="the search's folder (its summary.json)")
    ap.add_argument("--spec-json", default=None, help="the winner's image spec as JSON instead of the search's")
    ap.add_argument("--image-size", type=int, default=None, help="the winner's resolution (default: the search's)")
    ap.add_argument("--reference", default=None, help="the reference image student (default: the recipe's)")
    ap.add_argument("--recipe", default="recipes/mobilevit_int8.yaml")
    ap.add_argument("--seeds", default="0,1,2", help="student seeds of both rows")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/ablation"), help="run folder (shared with the ablation)")
    ap.add_argument("--json", type=Path, default=Path("bench/out/search_winner.json"))
    ap.add_argument("--docs", action="store_true", help="copy the JSON to docs/results/search_winner.json")
    args = ap.parse_args(argv)
    args.argv = argv
    try:
        args.seeds = parse_seeds(args.seeds, "--seeds")
        result = bench(args)
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    from compress.atomic import write_json, write_text

    text = table(result)
    write_json(args.json, result)
    write_text(args.json.with_suffix(".md"), text + "\n")
    if args.docs:
        write_json(Path("docs/results/search_winner.json"), result)
    print(text)


if __name__ == "__main__":
    main()
