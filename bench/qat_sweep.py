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
    "QAT lr 3e-6 from ptq-int8 ranges": ["qat.lr=3e-6", "qat.calibrate=true"],
    "QAT lr 1e-5 from ptq-int8 ranges, self-distill only": ["qat.lr=1e-5", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
    "QAT lr 3e-5 from ptq-int8 ranges, self-distill only": ["qat.lr=3e-5", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
    "QAT lr 1e-4 from ptq-int8 ranges, self-distill only": ["qat.lr=1e-4", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
}
KEEP = ("student_fp32", "student_distill", "recipe.json", "logs")  # what a resumed run reads instead of retraining


def variant_folder(out: Path, name: str) -> Path:
    return out / "runs" / re.sub(r"[^\w.-]+", "_", name)


def run_variant(recipe_path: str, run: Path, name: str, overrides: list[str], out: Path) -> dict:
    from compress.pipeline import run_recipe

    folder = variant_folder(out, name)
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


def eval_predictions(pte: Path, split, names: dict[str, dict[int, str]]) -> dict[str, list[int]]:
    """Top-1 class (index into `split.class_ids`) of every `split` image, per language, from an exported `.pte` and
    its bundle's tokenizer: what the flip counts compare."""
    import torch

    from compress.data.augment import to_float
    from compress.eval_cmd import pte_bundle_encoders
    from compress.evaluate import embed_in_batches
    from compress.prompts import eval_prompts

    enc = pte_bundle_encoders(pte)
    img = embed_in_batches(lambda x: enc.encode_image(to_float(x)), split.images, 256)
    out = {}
    for lang in ("en", "zh"):
        txt = embed_in_batches(enc.encode_text, eval_prompts([names[lang][c] for c in split.class_ids], lang), 256)
        out[lang] = torch.argmax(img @ txt.t(), dim=1).tolist()  # first maximum: the tie rule of compress.metrics
    return out


def flips(preds: dict[str, list[int]], ref: dict[str, list[int]], targets: list[int]) -> dict[str, dict[str, int]]:
    """Per language, against the fp32 `.pte`: eval images it got right that this model gets wrong (`lost`), the
    reverse (`gained`), and images where the two predict different classes at all (`changed`). The top-1 difference
    is gained - lost; `changed` says how far the model is from fp32 whatever the labels."""
    out = {}
    for lang in ("en", "zh"):
        p, r = preds[lang], ref[lang]
        out[lang] = {"lost": sum(a != t and b == t for a, b, t in zip(p, r, targets)),
                     "gained": sum(a == t and b != t for a, b, t in zip(p, r, targets)),
                     "changed": sum(a != b for a, b in zip(p, r))}
    return out


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
    from compress.data.sources import load_run_data

    recipe = load_recipe(args.recipe)
    data = load_run_data(recipe.data, recipe.seed)
    split = data.eval_splits["eval"]
    pos = {c: i for i, c in enumerate(split.class_ids)}
    targets = [pos[int(label)] for label in split.labels]
    ref = eval_predictions(args.run / "export" / "image_fp32.pte", split, data.names)
    wanted = [w for w in args.only.split(",") if w]
    variants = {n: o for i, (n, o) in enumerate(VARIANTS.items()) if i == 0 or not wanted or any(w in n for w in wanted)}
    for name, overrides in variants.items():
        report = run_variant(args.recipe, args.run, name, overrides, args.out)
        key = "student_ptq-int8_pte" if "qat.scheme=ptq-int8" in overrides else "student_int8_pte"
        z = report["models"][key]["zero_shot"]["eval"]
        pte = variant_folder(args.out, name) / "export" / f"image_{key.split('_')[1]}.pte"
        rows.append({"variant": name, "overrides": overrides, "en": z["en"]["top1"], "zh": z["zh"]["top1"],
                     "vs_fp32": flips(eval_predictions(pte, split, data.names), ref, targets)})
    ptq = rows[1]
    for r in rows:
        for lang in ("en", "zh"):
            r[f"{lang}_images_vs_ptq"] = round((r[lang] - ptq[lang]) * n_eval)
    result = {"run": str(args.run), "recipe": args.recipe, "eval_images": n_eval, "rows": rows}
    write_json(args.out.with_suffix(".json"), result)
    lines = [f"QAT vs post-training int8 on `{args.run}` (eval split, {n_eval} images: one image = "
             f"{100 / n_eval:.3f} points). `python -m bench.qat_sweep`", "",
             "Against the fp32 `.pte`, per language: images lost / gained (right in one, wrong in the other) and "
             "changed (a different top-1 class).", "",
             "| variant | en top-1 % | zh top-1 % | en images vs ptq | zh images vs ptq | en lost / gained / changed "
             "vs fp32 | zh lost / gained / changed vs fp32 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.get("vs_fp32")
        cells = [" / ".join(str(f[lang][k]) for k in ("lost", "gained", "changed")) if f else "" for lang in ("en", "zh")]
        lines.append(f"| {r['variant']} | {100 * r['en']:.2f} | {100 * r['zh']:.2f} | {r['en_images_vs_ptq']:+d} | "
                     f"{r['zh_images_vs_ptq']:+d} | {cells[0]} | {cells[1]} |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
