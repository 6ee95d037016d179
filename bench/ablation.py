"""The DC-CLIP ablation in the S/K/U world (issue 16): what distillation carries that the student's pairs don't.

    python -m bench.ablation [--recipe recipes/mobilevit_int8.yaml] [--rows ID,...] [--seeds 0,1,2]
                             [--split-seeds 0,1,2] [--only-first-seed] [--curves] [--docs]
        ->  bench/out/ablation.json, bench/out/ablation.md (with --docs also docs/results/ablation.json and the table
            in docs/ablation.md)

Every call first tunes stage-2-only's learning rate on `val` (STAGE2_LRS at seed 0; the JSON's
`selection.stage2_s_lr`), then runs the rows asked for, each row through all its runs before the next row: claim rows
at every `--seeds`, headline rows also at every `--split-seeds`, other rows once (`--only-first-seed`: every row
once). `make ablation` runs everything. A run already finished is read, not retrained, and a killed run resumes from
its own checkpoints, so the bench survives being stopped and started again.

Rows (stable ids; `rows()` gives each one's `--set` overrides of the recipe, QAT and export off: this measures the
method; docs/ablation.md says what each is). Every choice is made on `val` / `val_known` (fresh renders of S / K that
no reported split holds). Reported: `known`, `eval`, `unseen` (and its strata) top-1, en / zh. Rows compare at equal
epochs, not equal steps (an epoch over S's pairs is 4 steps, over stage 1's rows 16); `--curves` adds 2x and 4x.

Statistics (compress/eval/stats.py): per row mean ± sd over its runs; per comparison the paired difference (b − a,
points) with a 95% interval from a bootstrap over classes (items of every common run pooled, resampled by class), the
t-interval of the per-run differences, and McNemar's p within each run. Student seeds share the split seed's renders
and items, so runs pair item by item.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.atomic import write_json, write_text
from compress.recipe import load_recipe

LANGS = ("en", "zh")
TABLE_SPLITS = ("known", "eval", "unseen")
ALL_SPLITS = ("val", "val_known", "known", "eval", "unseen", "unseen_sibling", "unseen_novel", "unseen_flags")
STAGE2_LRS = (2.5e-4, 5e-4, 1e-3, 2e-3)
DOCS_START, DOCS_END = "<!-- ablation:start -->", "<!-- ablation:end -->"
NO_UNPAIRED = ["distill.unpaired_images=null", "distill.text_only=null"]
BOTH = ["distill.unpaired_images=world", "distill.text_only=world"]


@dataclass(frozen=True)
class Row:
    label: str
    overrides: tuple[str, ...]
    claim: bool = False  # the docs draw a claim from it: run at every --seeds
    headline: bool = False  # also at every --split-seeds


def rows(base, stage2_lr: float) -> dict[str, Row]:
    """Each row's overrides of the base recipe. `stage2_lr`: stage-2-only's learning rate, chosen on val."""
    e = base.distill.epochs + base.align.epochs
    s2 = ("distill.enabled=false", f"align.epochs={e}", f"align.lr={stage2_lr}", "align.retain=0.0", *NO_UNPAIRED)
    both = (*BOTH,)
    t = load_recipe(base.teacher.recipe).data
    return {
        "stage2_s": Row("stage-2-only on S (contrastive from scratch, lr on val)", s2, True, True),
        "stage2_sk": Row("stage-2-only on S ∪ K pairs (what K's pairs would buy)", s2 + ("data.pairs=teacher",), True),
        "stage2_s_16renders": Row(f"stage-2-only on S with the teacher's {t.train_renders} renders",
                                  s2 + (f"data.train_renders={t.train_renders}",), True),
        "dcclip_s": Row("DC-CLIP on S pairs", tuple(NO_UNPAIRED), True),
        "dcclip_k_images": Row("DC-CLIP + K images (unpaired)", ("distill.unpaired_images=world", "distill.text_only=null"), True),
        "dcclip_k_text": Row("DC-CLIP + K text (unpaired)", ("distill.unpaired_images=null", "distill.text_only=world"), True),
        "dcclip_both": Row("DC-CLIP + K images + K text", both, True, True),
        "dcclip_no_retain": Row("DC-CLIP + both, stage 2 on pairs only (align.retain 0)", both + ("align.retain=0.0",), True),
        "maps_only": Row("+ both, stage 1 maps and hidden states only (embed_adapter none)", both + ("distill.embed_adapter=none",)),
        "embed_only": Row("+ both, stage 1 embeddings only (map and hidden weights 0)",
                          both + ("distill.map_weight=0.0", "distill.hidden_weight=0.0")),
        "shared_adapter": Row("+ both, one shared embedding adapter", both + ("distill.embed_adapter=shared",)),
        "per_tower_adapter": Row("+ both, per-tower embedding adapters", both + ("distill.embed_adapter=per_tower",)),
        "pseudo_label": Row("stage-2-only on S + K images labelled by the teacher's zero-shot guess",
                            s2 + both + ("align.pseudo_label=true",), True),
        "affinity_only": Row("affinity (logit) distillation instead of stage 1", s2 + ("align.affinity_weight=1.0",)),
        "margin": Row("+ both, positive-pair term (linear, weight 0.3)", both + ("align.margin_reg=0.3", "align.margin_form=linear")),
    }


COMPARISONS = (  # (a, b): b - a
    ("stage2_s", "dcclip_both"), ("stage2_s_16renders", "dcclip_both"), ("stage2_sk", "dcclip_both"),
    ("dcclip_s", "dcclip_both"), ("dcclip_s", "dcclip_k_images"), ("dcclip_s", "dcclip_k_text"),
    ("dcclip_no_retain", "dcclip_both"), ("dcclip_both", "maps_only"), ("dcclip_both", "embed_only"),
    ("pseudo_label", "dcclip_both"), ("stage2_s", "pseudo_label"), ("shared_adapter", "per_tower_adapter"), ("stage2_s", "affinity_only"), ("dcclip_both", "margin"),
    ("stage2_s", "stage2_sk"), ("stage2_s", "stage2_s_16renders"),
)
CURVES = ("dcclip_both", "stage2_s")  # learning curves at 1x, 2x and 4x the headline steps
CURVE_MULTS = (1, 2, 4)
# The positive-pair term's sweep (issue 16): its weight x the initial temperature (the logit scale then trains), on
# dcclip_both at the first seed, chosen on val. Weight 0 is dcclip_both itself; the temperature lives in the stage-1
# checkpoint, so each temperature is one more stage 1 and each weight one more stage 2.
MARGIN_WEIGHTS = (0.0, 0.3, 1.0)
MARGIN_TEMPERATURES = (0.07, 0.03)


# ------------------------------------------------------------------------------------------------ running one
def _key(recipe, exclude: set[str]) -> str:
    """A run's folder name: the recipe's fingerprint payload (keys added later drop out at their defaults, so a new
    recipe key does not orphan finished runs), minus the sections `exclude` names (the stage-1 key drops stage 2's,
    but keeps align.init_temperature, which the stage-1 checkpoint carries)."""
    payload = recipe.fingerprint_payload()
    if "align" in exclude:
        payload["align"] = {"init_temperature": payload["align"]["init_temperature"]}
    for section in exclude - {"align"}:
        payload.pop(section, None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def hold_lock(out: Path) -> None:
    """One bench per output folder: a second would rename or train the first's runs under it."""
    import atexit
    import os

    out.mkdir(parents=True, exist_ok=True)
    lock = out / "bench.pid"
    if lock.is_file():
        try:
            pid = int(lock.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            pid = 0
        if pid and pid != os.getpid():
            raise SystemExit(f"bench.ablation: another run (pid {pid}) is using {out}; wait for it or stop it")
    write_text(lock, f"{os.getpid()}\n")
    atexit.register(lambda: lock.unlink(missing_ok=True))


def migrate_run_keys(runs: Path) -> int:
    """Rename run folders made under an older key (the recipe each run wrote, re-keyed) and refresh their stage-1
    keys; a folder whose recipe no longer loads is left alone. Only between bench calls: never while one runs."""
    from compress.recipe.schema import Recipe

    moved = 0
    for folder in sorted(p for p in runs.glob("*") if (p / "recipe.json").is_file()) if runs.is_dir() else ():
        raw = json.loads((folder / "recipe.json").read_text(encoding="utf-8"))
        try:
            recipe = Recipe.model_validate(raw)
        except Exception:  # noqa: BLE001 - a recipe of another code version: leave the run alone
            continue
        write_text(folder / "stage1.key", _key(recipe, {"align", "qat", "export"}) + "\n")
        target = runs / _key(recipe, set())
        if target != folder and not target.exists():
            folder.rename(target)
            moved += 1
    return moved


def recipe_for(recipe_path: str, overrides: list[str], seed: int, split_seed: int):
    return load_recipe(recipe_path, [*overrides, f"seed={seed}", f"data.split_seed={split_seed}",
                                     "qat.enabled=false", "export.enabled=false", "name=ablation",
                                     f"eval.splits=[{', '.join(ALL_SPLITS)}]"])


def run_one(recipe, out: Path) -> Path:
    """The run of `recipe` under out/runs/<hash>: rows that are the same recipe share it, and a run whose stage 1 is
    another finished run's (only stage 2 differs) starts from a copy of that run's student_distill."""
    from compress.pipeline.run import run_recipe

    runs = out / "runs"
    folder = runs / _key(recipe, set())
    if (folder / "correct.json").is_file():
        return folder
    stage1 = _key(recipe, {"align", "qat", "export"})
    if not (folder / "student_distill" / "model.json").is_file() and recipe.distill.enabled:
        for other in sorted(runs.glob("*/stage1.key")) if runs.is_dir() else ():
            if other.read_text().strip() == stage1 and (other.parent / "student_distill" / "model.json").is_file():
                tmp = folder / "student_distill.partial"  # copy, then rename: a killed copy is never "complete"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(other.parent / "student_distill", tmp)
                tmp.rename(folder / "student_distill")
                break
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "stage1.key", stage1 + "\n")
    if not (folder / "report.json").is_file():
        t0 = time.perf_counter()
        run_recipe(recipe, folder, resume=True)
        write_json(folder / "wall.json", {"seconds": round(time.perf_counter() - t0, 1)})
    correct = per_item(recipe, folder)
    check_against_report(correct, json.loads((folder / "report.json").read_text(encoding="utf-8")))
    write_json(folder / "correct.json", correct)
    return folder


def check_against_report(correct: dict, report: dict) -> None:
    """The per-item scoring must give the run's own reported top-1 (the same model, items and prompts)."""
    for split, row in top1(correct, "student").items():
        for lang, value in row.items():
            reported = 100.0 * report["models"]["student_fp32"]["zero_shot"][split][lang]["top1"]
            if abs(value - reported) > 1e-6:
                raise RuntimeError(f"per-item top-1 {split}/{lang} {value:.3f} != the report's {reported:.3f}")


def per_item(recipe, folder: Path) -> dict:
    """Per-split, per-language item correctness (0/1 string) of the run's student and its teacher, with each item's
    class: what the paired statistics need (the report holds only the means)."""
    from compress.eval.zero_shot import eager_encoders, teacher_encoders, zero_shot_scores
    from compress.model import load_checkpoint
    from compress.pipeline.data import load_run_data
    from compress.pipeline.run import load_teacher

    data = load_run_data(recipe.data, recipe.seed)
    model, tok, _ = load_checkpoint(folder / "student_fp32")
    encs = {"student": eager_encoders("student", model, tok), "teacher": teacher_encoders(load_teacher(recipe))}
    out: dict = {}
    for split in ALL_SPLITS:
        sp = data.eval_splits.get(split)
        if sp is None or len(sp) == 0:
            continue
        out[split] = {"classes": [int(c) for c in sp.labels]}
        for who, enc in encs.items():
            targets, scores = zero_shot_scores(enc, sp.images, sp.labels, sp.class_ids, data.names, 256, LANGS)
            out[split][who] = {lang: "".join("1" if ok else "0" for ok in (s.argmax(1) == targets).tolist())
                               for lang, s in scores.items()}
    return out


# ------------------------------------------------------------------------------------------------ statistics
def top1(correct: dict, who: str) -> dict:
    return {s: {lang: 100.0 * v[who][lang].count("1") / len(v[who][lang]) for lang in LANGS} for s, v in correct.items()}


def bits(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8) - ord("0")


def compare(a: dict[tuple[int, int], dict], b: dict[tuple[int, int], dict], who_a: str = "student",
            who_b: str = "student") -> dict:
    """b − a per split and language over the (split seed, seed) runs both have."""
    from compress.eval.stats import mcnemar, paired_bootstrap_ci, paired_seed_ci

    common = sorted(set(a) & set(b))
    res: dict = {"runs": [list(k) for k in common]}
    if not common:
        return res
    for split in TABLE_SPLITS + ("val", "val_known"):
        if any(split not in a[k] or split not in b[k] for k in common):
            continue
        if any(a[k][split]["classes"] != b[k][split]["classes"] for k in common):
            raise ValueError(f"compare: the two rows scored different items on {split}")
        res[split] = {}
        for lang in LANGS:
            ca = np.concatenate([bits(a[k][split][who_a][lang]) for k in common])
            cb = np.concatenate([bits(b[k][split][who_b][lang]) for k in common])
            # classes are the same ids across runs of one split seed; across split seeds they are other classes
            cl = np.concatenate([np.asarray(a[k][split]["classes"]) + 100_000 * k[0] for k in common])
            boot = paired_bootstrap_ci(ca, cb, cl, n_boot=2000, seed=0)
            per_run = [100.0 * (bits(b[k][split][who_b][lang]).mean() - bits(a[k][split][who_a][lang]).mean()) for k in common]
            entry = {"diff": boot["diff"], "ci95_class_bootstrap": [boot["lo"], boot["hi"]], "per_run": per_run,
                     "mcnemar_p": [mcnemar(bits(a[k][split][who_a][lang]), bits(b[k][split][who_b][lang]))["p"]
                                   for k in common]}
            if len(common) >= 2:
                seed_ci = paired_seed_ci(per_run, seed=0)
                entry["ci95_seed_t"] = [seed_ci["t_lo"], seed_ci["t_hi"]]
            res[split][lang] = entry
    return res


def summarise(runs: dict[tuple[int, int], dict], who: str = "student") -> dict:
    from compress.eval.stats import mean_sd

    per = {f"{ss}/{s}": top1(c, who) for (ss, s), c in sorted(runs.items())}
    out: dict = {"runs": list(per), "top1": per, "mean": {}, "sd": {}}
    for split in ALL_SPLITS:
        vals = {lang: [p[split][lang] for p in per.values() if split in p] for lang in LANGS}
        if vals["en"]:
            out["mean"][split] = {lang: mean_sd(v)[0] for lang, v in vals.items()}
            out["sd"][split] = {lang: mean_sd(v)[1] for lang, v in vals.items()}
    return out


def val_score(correct: dict) -> float:
    """The selection objective: mean top-1 over val (S) and val_known (K), en and zh."""
    t = top1(correct, "student")
    return float(np.mean([t[s][lang] for s in ("val", "val_known") for lang in LANGS]))


# ------------------------------------------------------------------------------------------------ the bench
def load_correct(folder: Path) -> dict:
    return json.loads((folder / "correct.json").read_text(encoding="utf-8"))


def tune_stage2_lr(args, base, out: Path, train: bool = True) -> tuple[float, dict]:
    """stage-2-only's learning rate: each of STAGE2_LRS at seed 0, split seed 0; the best val score wins."""
    grid = {}
    for lr in STAGE2_LRS:
        r = rows(base, lr)["stage2_s"]
        recipe = recipe_for(args.recipe, list(r.overrides), 0, args.split_seeds[0])
        f = run_one(recipe, out) if train else out / "runs" / _key(recipe, set())
        if (f / "correct.json").is_file():
            grid[f"{lr:g}"] = {"val_score": val_score(load_correct(f)), "run": f.name}
    if not grid:
        raise SystemExit("bench.ablation --no-train: no stage-2-only tuning run is finished yet; run without it first")
    best = max(grid, key=lambda k: grid[k]["val_score"])
    return float(best), grid


def markdown(result: dict) -> str:
    head = "| row | runs | " + " | ".join(f"{s} {lang}" for s in TABLE_SPLITS for lang in LANGS) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(TABLE_SPLITS))]
    for rid, row in result["rows"].items():
        n = len(row.get("runs", []))
        if not n:
            lines.append(f"| `{rid}` {row['label']} | not run | " + " | ".join("–" for _ in range(2 * len(TABLE_SPLITS))) + " |")
            continue
        cells = []
        for s in TABLE_SPLITS:
            for lang in LANGS:
                m, sd = row["mean"].get(s, {}).get(lang), row["sd"].get(s, {}).get(lang)
                cells.append("–" if m is None else (f"{m:.1f} ± {sd:.1f}" if n > 1 else f"{m:.1f} (1 run)"))
        lines.append(f"| `{rid}` {row['label']} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "| b − a (points, 95% class-bootstrap interval) | runs | "
              + " | ".join(f"{s} {lang}" for s in TABLE_SPLITS for lang in LANGS) + " |",
              "|" + "---|" * (2 + 2 * len(TABLE_SPLITS))]
    for name, c in result["comparisons"].items():
        if not c.get("runs"):
            continue
        cells = []
        for s in TABLE_SPLITS:
            for lang in LANGS:
                e = c.get(s, {}).get(lang)
                cells.append("–" if e is None else f"{e['diff']:+.1f} [{e['ci95_class_bootstrap'][0]:+.1f}, "
                                                   f"{e['ci95_class_bootstrap'][1]:+.1f}]")
        lines.append(f"| {name} | {len(c['runs'])} | " + " | ".join(cells) + " |")
    if result.get("curves"):
        lines += ["", "Learning curves (first seed, one run per cell; steps are optimizer steps over both stages):", "",
                  "| row | × epochs | steps | val score | " + " | ".join(f"{s} {lang}" for s in TABLE_SPLITS for lang in LANGS) + " |",
                  "|" + "---|" * (4 + 2 * len(TABLE_SPLITS))]
        for rid, by_mult in result["curves"].items():
            for mult, e in sorted(by_mult.items(), key=lambda kv: int(kv[0][:-1])):
                lines.append(f"| `{rid}` | {mult} | {e['steps']} | {e['val_score']:.1f} | "
                             + " | ".join(f"{e['top1'][s][lang]:.1f}" for s in TABLE_SPLITS for lang in LANGS) + " |")
    sweep = result.get("margin_sweep") or {}
    if sweep.get("cells"):
        lines += ["", f"Positive-pair term sweep on `dcclip_both` ({sweep['form']} form; first seed, one run per cell; "
                  f"best val score: **{sweep['chosen']}**; a default changes only past the seed sd, see below):", "",
                  "| weight × initial temperature | val score | " + " | ".join(f"{s} {lang}" for s in TABLE_SPLITS for lang in LANGS) + " |",
                  "|" + "---|" * (2 + 2 * len(TABLE_SPLITS))]
        for name, e in sweep["cells"].items():
            lines.append(f"| {name} | {e['val_score']:.1f} | "
                         + " | ".join(f"{e['top1'][s][lang]:.1f}" for s in TABLE_SPLITS for lang in LANGS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="recipes/mobilevit_int8.yaml")
    ap.add_argument("--rows", default="", help="comma-separated row ids (default: every row)")
    ap.add_argument("--seeds", default="0,1,2", help="student seeds of the claim rows (others: the first)")
    ap.add_argument("--split-seeds", default="0", help="split seeds of the headline rows (others: the first)")
    ap.add_argument("--only-first-seed", action="store_true", help="run every row at the first seed only (a quick pass)")
    ap.add_argument("--curves", action="store_true", help="also 2x and 4x the steps for dcclip_both and stage2_s")
    ap.add_argument("--curve-rows", default=",".join(CURVES), help="rows of --curves (in this order)")
    ap.add_argument("--curve-mults", default=",".join(map(str, CURVE_MULTS)), help="step multiples of --curves")
    ap.add_argument("--margin-sweep", action="store_true",
                    help="the positive-pair term's weight x initial temperature on dcclip_both, chosen on val")
    ap.add_argument("--out", type=Path, default=Path("bench/out/ablation"))
    ap.add_argument("--no-train", action="store_true", help="train nothing: tables and statistics from the finished runs")
    ap.add_argument("--docs", action="store_true", help="copy the JSON to docs/results/ and the table into docs/ablation.md")
    args = ap.parse_args(argv)
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.split_seeds = [int(x) for x in args.split_seeds.split(",")]
    args.curve_rows = [r for r in args.curve_rows.split(",") if r]
    args.curve_mults = [int(x) for x in args.curve_mults.split(",")]
    if any(r not in CURVES for r in args.curve_rows) or any(m < 1 for m in args.curve_mults):
        raise SystemExit(f"--curve-rows takes {', '.join(CURVES)}; --curve-mults positive integers")
    base = load_recipe(args.recipe)
    hold_lock(args.out)
    moved = migrate_run_keys(args.out / "runs")
    if moved:
        print(f"bench.ablation: {moved} run folder(s) renamed to their current keys")
    t0 = time.perf_counter()
    lr, grid = tune_stage2_lr(args, base, args.out, train=not args.no_train)
    table = rows(base, lr)
    chosen = [r for r in args.rows.split(",") if r] or list(table)
    bad = [r for r in chosen if r not in table and r != "teacher"]
    if bad:
        raise SystemExit(f"--rows: unknown row {bad[0]!r}; rows: teacher, {', '.join(table)}")
    runs: dict[str, dict[tuple[int, int], dict]] = {rid: {} for rid in table}
    teacher_runs: dict[tuple[int, int], dict] = {}
    for rid, row in table.items():
        seeds = args.seeds if row.claim and not args.only_first_seed else args.seeds[:1]
        split_seeds = args.split_seeds if row.headline and not args.only_first_seed else args.split_seeds[:1]
        for ss in split_seeds:
            for s in seeds:
                recipe = recipe_for(args.recipe, list(row.overrides), s, ss)
                folder = args.out / "runs" / _key(recipe, set())
                if rid in chosen and not args.no_train and not (folder / "correct.json").is_file():
                    folder = run_one(recipe, args.out)
                if (folder / "correct.json").is_file():
                    runs[rid][(ss, s)] = load_correct(folder)
                    # one teacher per split seed (student seeds share it and its items): counted once
                    if not any(k[0] == ss for k in teacher_runs):
                        teacher_runs[(ss, s)] = runs[rid][(ss, s)]
    curves = run_curves(args, base, table, args.out)
    sweep = margin_sweep(args, args.out, train=args.margin_sweep and not args.no_train)
    result = {
        "recipe": args.recipe,
        "command": "python -m bench.ablation " + " ".join(f"--{k} {v}" for k, v in (
            ("recipe", args.recipe), ("seeds", ",".join(map(str, args.seeds))),
            ("split-seeds", ",".join(map(str, args.split_seeds))))),
        "selection": {"objective": "mean top-1 over val and val_known, en and zh",
                      "stage2_s_lr": {"grid": grid, "chosen": lr}},
        "rows": {"teacher": {"label": "the teacher", **summarise(teacher_runs, "teacher")}}
                | {rid: {"label": row.label, "overrides": list(row.overrides), **summarise(runs[rid])}
                   for rid, row in table.items()},
        "comparisons": {f"{b} − {a}": compare(runs[a], runs[b]) for a, b in COMPARISONS},
        "retention_of_teacher_known": {
            rid: {lang: 100.0 * runs_mean(runs[rid], "known", lang, "student") / runs_mean(runs[rid], "known", lang, "teacher")
                  for lang in LANGS} for rid in ("dcclip_both", "stage2_s") if runs[rid]},
        "curves": curves,
        "margin_sweep": sweep,
        "bench_seconds_this_call": round(time.perf_counter() - t0, 1),
    }
    result["run_seconds"] = {f.parent.name: json.loads(f.read_text())["seconds"]
                             for f in sorted((args.out / "runs").glob("*/wall.json"))}
    write_json(args.out.parent / "ablation.json", result)
    text = markdown(result)
    write_text(args.out.parent / "ablation.md", text + "\n")
    print(text)
    if args.docs:
        Path("docs/results").mkdir(parents=True, exist_ok=True)
        write_json(Path("docs/results/ablation.json"), result)
        doc = Path("docs/ablation.md").read_text(encoding="utf-8")
        if DOCS_START in doc and DOCS_END in doc:
            head, rest = doc.split(DOCS_START, 1)
            write_text("docs/ablation.md", head + DOCS_START + "\n" + text + "\n" + DOCS_END + rest.split(DOCS_END, 1)[1])


def run_curves(args, base, table: dict, out: Path) -> dict:
    """Learning curves: each of args.curve_rows at each multiple of its epochs (both stages for DC-CLIP), first seed,
    first split seed; with --no-train (or multiples not asked this call) whatever is finished is read."""
    e1, e2 = base.distill.epochs, base.align.epochs
    curves: dict = {}
    for rid in args.curve_rows + [r for r in CURVES if r not in args.curve_rows]:
        for mult in sorted(set(CURVE_MULTS) | set(args.curve_mults)):
            extra = ([f"distill.epochs={e1 * mult}", f"align.epochs={e2 * mult}"] if rid == "dcclip_both"
                     else [f"align.epochs={(e1 + e2) * mult}"])
            recipe = recipe_for(args.recipe, list(table[rid].overrides) + extra, args.seeds[0], args.split_seeds[0])
            folder = out / "runs" / _key(recipe, set())
            if args.curves and not args.no_train and rid in args.curve_rows and mult in args.curve_mults:
                folder = run_one(recipe, out)
            if not (folder / "correct.json").is_file():
                continue
            c = load_correct(folder)
            steps = json.loads((folder / "report.json").read_text(encoding="utf-8"))["training"]
            curves.setdefault(rid, {})[f"{mult}x"] = {"top1": top1(c, "student"), "val_score": val_score(c),
                                                      "steps": sum(v.get("steps", 0) for v in steps.values())}
    return curves


def margin_sweep(args, out: Path, train: bool) -> dict:
    """MARGIN_WEIGHTS x MARGIN_TEMPERATURES on dcclip_both (linear form), first seed and split seed; the cell with the
    best val score is `chosen`. Untrained cells are left out."""
    cells: dict = {}
    for t in MARGIN_TEMPERATURES:
        for w in MARGIN_WEIGHTS:
            extra = [f"align.init_temperature={t}"] + ([f"align.margin_reg={w}", "align.margin_form=linear"] if w else [])
            recipe = recipe_for(args.recipe, BOTH + extra, args.seeds[0], args.split_seeds[0])
            folder = run_one(recipe, out) if train else out / "runs" / _key(recipe, set())
            if (folder / "correct.json").is_file():
                c = load_correct(folder)
                cells[f"w={w:g} T={t:g}"] = {"weight": w, "init_temperature": t, "val_score": val_score(c),
                                             "top1": top1(c, "student"), "run": folder.name}
    if not cells:
        return {}
    return {"form": "linear", "objective": "mean top-1 over val and val_known, en and zh", "cells": cells,
            "chosen": max(cells, key=lambda k: cells[k]["val_score"])}


def runs_mean(runs: dict, split: str, lang: str, who: str) -> float:
    return float(np.mean([top1(c, who)[split][lang] for c in runs.values()]))


if __name__ == "__main__":
    main()
