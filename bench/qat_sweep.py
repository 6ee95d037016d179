"""QAT against post-training quantization on one trained fp32 student: which QAT settings beat `ptq-int8`?

    python -m bench.qat_sweep [--run runs/mobilevit_int8] [--recipe recipes/mobilevit_int8.yaml] [--only SUBSTR,...]
                              [--out bench/out/qat_sweep]
        ->  bench/out/qat_sweep.json, bench/out/qat_sweep.md

Needs a finished run of the recipe (`make run`). Each variant copies that run's trained students (not its export)
to `--out/runs/<variant>` and resumes the recipe there with its `--set` overrides, so stages 1 and 2 are read, not
retrained, and only QAT (or calibration), lowering and the `.pte` evaluation run (about 2 minutes each here). Every
variant's int8 `.pte` is scored on the `eval` split in both languages beside the run's fp32 `.pte` and `ptq-int8`.
The table also gives one eval image in points, since the differences are counted in images. A variant whose report is
already there is read, so an interrupted sweep continues.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from compress.atomic import write_json, write_text
from compress.recipe import load_recipe

FAST = ["qat.compare=[]", "export.quant=[int8]", "eval.splits=[eval]", "eval.latency_runs=3"]
VARIANTS: dict[str, list[str]] = {
    "ptq-int8 (calibration only)": ["qat.scheme=ptq-int8", "qat.calibrate=false"],
    "QAT lr 3e-6 (recipe)": ["qat.lr=3e-6"],
    "QAT lr 1e-5": ["qat.lr=1e-5"],
    "QAT lr 1e-4": ["qat.lr=1e-4"],
    "QAT lr 1e-5 + self_distill 1": ["qat.lr=1e-5", "qat.self_distill=1"],
    "QAT lr 1e-5 + self_distill 10": ["qat.lr=1e-5", "qat.self_distill=10"],
    "QAT lr 3e-5 + self_distill 10": ["qat.lr=3e-5", "qat.self_distill=10"],
    "QAT lr 3e-6 from calibrated ranges": ["qat.lr=3e-6", "qat.calibrate=true"],
    "QAT lr 1e-5 + self_distill 10 from calibrated ranges": ["qat.lr=1e-5", "qat.self_distill=10", "qat.calibrate=true"],
}
KEEP = ("student_fp32", "student_distill", "recipe.json", "logs")  # what a resumed run reads instead of retraining


def run_variant(recipe_path: str, run: Path, name: str, overrides: list[str], out: Path) -> dict:
    from compress.pipeline import run_recipe

    folder = out / "runs" / re.sub(r"[^\w.-]+", "_", name)
    if not (folder / "report.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for item in KEEP:
            src = run / item
            if src.is_dir():
                shutil.copytree(src, folder / item)
            elif src.is_file():
                shutil.copy2(src, folder / item)
        recipe = load_recipe(recipe_path, FAST + overrides)
        run_recipe(recipe, folder, resume=True)
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/mobilevit_int8"))
    ap.add_argument("--recipe", default="recipes/mobilevit_int8.yaml")
    ap.add_argument("--out", type=Path, default=Path("bench/out/qat_sweep"))
    ap.add_argument("--only", default="", help="comma-separated substrings: run only the variants whose name has one "
                    "(ptq-int8 always runs: the rows are counted against it)")
    args = ap.parse_args()
    if not (args.run / "student_fp32").is_dir():
        raise SystemExit(f"error: {args.run}/student_fp32 not found; run `make run` (or pass --run RUN) first")
    base = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    n_eval = base["data"]["splits"]["eval"]["images"]
    fp32 = base["models"]["student_fp32_pte"]["zero_shot"]["eval"]
    rows = [{"variant": "fp32 .pte", "overrides": [], "en": fp32["en"]["top1"], "zh": fp32["zh"]["top1"]}]
    wanted = [w for w in args.only.split(",") if w]
    variants = {n: o for i, (n, o) in enumerate(VARIANTS.items()) if i == 0 or not wanted or any(w in n for w in wanted)}
    for name, overrides in variants.items():
        report = run_variant(args.recipe, args.run, name, overrides, args.out)
        key = "student_ptq-int8_pte" if "qat.scheme=ptq-int8" in overrides else "student_int8_pte"
        z = report["models"][key]["zero_shot"]["eval"]
        rows.append({"variant": name, "overrides": overrides, "en": z["en"]["top1"], "zh": z["zh"]["top1"]})
    ptq = rows[1]
    for r in rows:
        for lang in ("en", "zh"):
            r[f"{lang}_images_vs_ptq"] = round((r[lang] - ptq[lang]) * n_eval)
    result = {"run": str(args.run), "recipe": args.recipe, "eval_images": n_eval, "rows": rows}
    write_json(args.out.with_suffix(".json"), result)
    lines = [f"QAT vs post-training int8 on `{args.run}` (eval split, {n_eval} images: one image = "
             f"{100 / n_eval:.3f} points). `python -m bench.qat_sweep`", "",
             "| variant | en top-1 % | zh top-1 % | en images vs ptq | zh images vs ptq |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {100 * r['en']:.2f} | {100 * r['zh']:.2f} | {r['en_images_vs_ptq']:+d} | "
                     f"{r['zh_images_vs_ptq']:+d} |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
