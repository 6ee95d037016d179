"""QAT against post-training quantization on one trained fp32 student: which QAT settings beat `ptq-int8`?

    python -m bench.qat_sweep [--run runs/mobilevit_int8] [--recipe recipes/mobilevit_int8.yaml] [--only SUBSTR,...]
                              [--out bench/out/qat_sweep]
        ->  bench/out/qat_sweep.json, bench/out/qat_sweep.md

Needs a finished run of the recipe (`make run`). Each variant copies that run's trained students (not its export)
to `--out/runs/<variant>` and resumes the recipe there with its `--set` overrides, so stages 1 and 2 are read, not
retrained, and only QAT (or calibration), lowering and the `.pte` evaluation run (about 1.5 minutes each here).

Every variant's int8 `.pte` is scored on two held-out sets beside the run's fp32 `.pte` and `ptq-int8`:
- `val`: 7 more draws per seen class from the `eval` RNG stream (8,036 images), disjoint from `eval`. The settings
  are picked here (most images right, en + zh), because one `eval` image is 0.087 points and re-quantizing the same
  student with any setting moves 50-170 `eval` predictions: `eval` alone cannot tell such variants apart;
- `eval`: the split every report scores, with the images each variant lost and gained against fp32.
A variant whose report is already there is read, so an interrupted sweep continues.
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
# QAT keys at their defaults and 3 epochs (the recipe before the sweep), so a variant means the same whatever the
# recipe's own qat values are now
RESET = ["qat.epochs=3", "qat.self_distill=0", "qat.calibrate=false", "qat.contrastive=1"]
VARIANTS: dict[str, list[str]] = {
    "ptq-int8 (calibration only)": ["qat.scheme=ptq-int8", "qat.calibrate=false"],
    "QAT lr 3e-6 (the recipe before the sweep)": ["qat.lr=3e-6"],
    "QAT lr 1e-5": ["qat.lr=1e-5"],
    "QAT lr 1e-4": ["qat.lr=1e-4"],
    "QAT lr 1e-5 + self_distill 1": ["qat.lr=1e-5", "qat.self_distill=1"],
    "QAT lr 1e-5 + self_distill 10": ["qat.lr=1e-5", "qat.self_distill=10"],
    "QAT lr 3e-5 + self_distill 10": ["qat.lr=3e-5", "qat.self_distill=10"],
    "QAT lr 3e-5 + self_distill 1": ["qat.lr=3e-5", "qat.self_distill=1"],
    "QAT lr 1e-5 + self_distill 1, 6 epochs": ["qat.lr=1e-5", "qat.self_distill=1", "qat.epochs=6"],
    "QAT lr 1e-5 + self_distill 1, 12 epochs": ["qat.lr=1e-5", "qat.self_distill=1", "qat.epochs=12"],
    "QAT lr 1e-5 + self_distill 1 from ptq-int8 ranges": ["qat.lr=1e-5", "qat.self_distill=1", "qat.calibrate=true"],
    "QAT lr 1e-5 + self_distill 1, 12 epochs from ptq-int8 ranges (the recipe now)": ["qat.lr=1e-5", "qat.self_distill=1",
                                                                      "qat.calibrate=true", "qat.epochs=12"],
    "QAT lr 3e-6 from ptq-int8 ranges": ["qat.lr=3e-6", "qat.calibrate=true"],
    "QAT lr 1e-5 from ptq-int8 ranges, self-distill only": ["qat.lr=1e-5", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
    "QAT lr 3e-5 from ptq-int8 ranges, self-distill only": ["qat.lr=3e-5", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
    "QAT lr 1e-4 from ptq-int8 ranges, self-distill only": ["qat.lr=1e-4", "qat.calibrate=true", "qat.contrastive=0",
                                                            "qat.self_distill=1"],
}
KEEP = ("student_fp32", "student_distill", "recipe.json", "logs", "search")  # what a resumed run reads instead of retraining


def variant_folder(out: Path, name: str) -> Path:
    return out / "runs" / re.sub(r"[^\w.-]+", "_", name)


def run_variant(recipe_path: str, run: Path, name: str, overrides: list[str], out: Path) -> dict:
    from compress.pipeline.run import run_recipe

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
        recipe = load_recipe(recipe_path, FAST + RESET + overrides)
        run_recipe(recipe, folder, resume=True)
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def top1(pte: Path, split, names: dict[str, dict[int, str]]) -> tuple[list[int], dict[str, list[int]]]:
    """(targets, per language the predicted class) of every `split` image, both as rows of `split.class_ids`, from an
    exported `.pte` and its bundle's tokenizer: what the flip counts compare."""
    from compress.pipeline.compare import pte_bundle_encoders
    from compress.eval.zero_shot import zero_shot_scores

    targets, scores = zero_shot_scores(pte_bundle_encoders(pte), split.images, split.labels, split.class_ids, names)
    # argmax takes the first maximum: compress.eval.metrics' tie rule, so the counts equal the reports' top-1
    return targets.tolist(), {lang: s.argmax(dim=1).tolist() for lang, s in scores.items()}


VAL_RENDERS = 8  # eval-stream draws per class for the validation set; draw 0 is the eval split itself


def validation_split(recipe, eval_split):
    """Draws 1..VAL_RENDERS-1 of the `eval` RNG stream for the seen classes: held out from training like `eval`, and
    disjoint from it (per-sample RNG streams make draw 0 of this build byte-identical to `eval`, checked here). QAT
    settings are picked on it, so `eval` stays a test set."""
    import torch

    from compress.data.emoji import Split
    from compress.pipeline.data import load_run_data

    more = load_run_data(recipe.data.model_copy(update={"eval_renders": VAL_RENDERS}), recipe.seed).eval_splits["eval"]
    first = more.renders == 0
    if not torch.equal(more.images[first], eval_split.images) or more.class_ids != eval_split.class_ids:
        raise SystemExit("error: draw 0 of the validation build differs from the eval split; the data cache is stale")
    keep = ~first
    return Split(more.images[keep], more.labels[keep], more.class_ids, more.styles[keep], more.renders[keep])


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
    from compress.pipeline.data import load_run_data

    recipe = load_recipe(args.recipe)
    data = load_run_data(recipe.data, recipe.seed)
    splits = {"val": validation_split(recipe, data.eval_splits["eval"]), "eval": data.eval_splits["eval"]}

    def score(pte: Path) -> dict:
        out = {}
        for k, sp in splits.items():
            targets, preds = top1(pte, sp, data.names)
            out[k] = {"targets": targets, "preds": preds,
                      "correct": {lang: sum(a == t for a, t in zip(p, targets)) for lang, p in preds.items()}}
        return out

    ref = score(args.run / "export" / "image_fp32.pte")
    rows = [{"variant": "fp32 .pte", "overrides": [], "correct": {k: ref[k]["correct"] for k in splits}}]
    wanted = [w for w in args.only.split(",") if w]
    variants = {n: o for i, (n, o) in enumerate(VARIANTS.items()) if i == 0 or not wanted or any(w in n for w in wanted)}
    for name, overrides in variants.items():
        report = run_variant(args.recipe, args.run, name, overrides, args.out)
        quant = "ptq-int8" if "qat.scheme=ptq-int8" in overrides else "int8"
        z = report["models"][f"student_{quant}_pte"]["zero_shot"]["eval"]
        s = score(variant_folder(args.out, name) / "export" / f"image_{quant}.pte")
        correct = {k: s[k]["correct"] for k in splits}
        assert all(correct["eval"][lang] == round(z[lang]["top1"] * len(splits["eval"])) for lang in ("en", "zh")), name
        rows.append({"variant": name, "overrides": overrides, "correct": correct,
                     "eval_vs_fp32": flips(s["eval"]["preds"], ref["eval"]["preds"], ref["eval"]["targets"])})
    ptq = rows[1]["correct"]
    for r in rows:
        r["vs_ptq"] = {k: {lang: r["correct"][k][lang] - ptq[k][lang] for lang in ("en", "zh")} for k in splits}
    qat_rows = rows[2:]
    picked = max(qat_rows, key=lambda r: sum(r["correct"]["val"].values()))["variant"] if qat_rows else None
    sizes = {k: len(sp) for k, sp in splits.items()}
    result = {"run": str(args.run), "recipe": args.recipe, "images": sizes, "picked_on_val": picked, "rows": rows}
    write_json(args.out.with_suffix(".json"), result)
    lines = [f"QAT vs post-training int8 on `{args.run}`. `python -m bench.qat_sweep`", "",
             f"- `val`: {sizes['val']} images, eval-stream renders 1-{VAL_RENDERS - 1} of the seen classes (the "
             "`eval` split is render 0, so the two are disjoint): the settings are chosen here;",
             f"- `eval`: the {sizes['eval']} images every report scores (one image = {100 / sizes['eval']:.3f} points);",
             "- lost / gained / changed: against the fp32 `.pte` on `eval`, images it got right that the variant gets "
             "wrong, the reverse, and images whose top-1 class differs at all.", "",
             "| variant | val images vs ptq (en / zh) | eval top-1 % (en / zh) | eval images vs ptq (en / zh) | "
             "en lost / gained / changed | zh lost / gained / changed |", "|---|---|---|---|---|---|"]
    for r in rows:
        f, c, d = r.get("eval_vs_fp32"), r["correct"], r["vs_ptq"]
        cells = [" / ".join(str(f[lang][k]) for k in ("lost", "gained", "changed")) if f else "" for lang in ("en", "zh")]
        name = f"**{r['variant']}** (best on val)" if r["variant"] == picked else r["variant"]
        lines.append(f"| {name} | {d['val']['en']:+d} / {d['val']['zh']:+d} | "
                     f"{100 * c['eval']['en'] / sizes['eval']:.2f} / {100 * c['eval']['zh'] / sizes['eval']:.2f} | "
                     f"{d['eval']['en']:+d} / {d['eval']['zh']:+d} | {cells[0]} | {cells[1]} |")
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
