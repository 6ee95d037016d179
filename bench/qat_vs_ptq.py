"""QAT against post-training int8 at equal training, on one finished run's fp32 student.

    python -m bench.qat_vs_ptq --run RUN_FOLDER [--out bench/out/qat_vs_ptq.json]

Needs a run in the S/K/U world (data.split_seed set: only there do `val`, `val_known` and `known` exist) whose
student_fp32/ and recipe.json are there. On that student, with the run's recipe:

1. PTQ tuned on `val` and `val_known`: ptq-int8 (calibration only) at every point of a small grid of the recipe's
   qat.ptq_* knobs: calibration batches x activation observer x per-channel linears (`GRID`). The point with the best
   mean top-1 (en and zh on both splits) is chosen; ties keep the earlier point, and today's settings come first.
2. At the chosen settings, three models re-built from the fp32 student by the run's own QAT stage code
   (compress/pipeline/quantize.py) and scored eagerly (the converted graphs, no `.pte`) on known, eval, unseen, val:
   - `ptq-int8`: calibration only;
   - `ft-ptq-int8`: the fp32 towers fine-tuned with QAT's loop, losses, epochs, seed and batch order, then ptq-int8:
     post-training quantization given the same extra training as QAT;
   - `int8`: static int8 QAT (PT2E fake-quant) with the recipe's qat settings, and with
     qat.calibrate, starting from the chosen ptq-int8's activation ranges.
3. QAT's gain over ft-ptq-int8 (what the fake-quant buys at equal training) and over ptq-int8, per split and
   language: the difference in points (QAT - baseline) with a 95% bootstrap interval over classes and McNemar's
   exact p (compress/eval/stats.py).

Every choice is made on `val` / `val_known`; known, eval and unseen are reported only. The JSON keeps, per model,
split and language, each image's 0/1 correctness (a string), so the comparisons can be redone. Resumable: grid points
and models already in the output (same run fingerprint) are read, not rebuilt; a killed fine-tune resumes from its
checkpoints in `<out>.scratch/`.
"""
from __future__ import annotations

import argparse
import itertools
import shutil
from pathlib import Path

CHOICE_SPLITS = ("val", "val_known")
REPORT_SPLITS = ("known", "eval", "unseen", "val")
WORLD_SPLITS = ("val", "val_known", "known")
LANGS = ("en", "zh")
MODELS = ("ptq-int8", "ft-ptq-int8", "int8")  # the last is QAT; the others are its baselines
GRID = {"batches": (4, 16), "observer": ("histogram", "minmax"), "per_channel": (None, True, False)}  # defaults first


def grid_points():
    """Every PTQSettings of GRID, today's (the recipe defaults) first."""
    from compress.quant.schemes import PTQSettings

    return [PTQSettings(b, o, c) for b, o, c in itertools.product(*GRID.values())]


def point_key(settings) -> str:
    """A stable, readable key of one grid point, e.g. `b4-histogram-per_tower`."""
    channel = {None: "per_tower", True: "per_channel", False: "per_tensor"}[settings.per_channel]
    return f"b{settings.batches}-{settings.observer}-{channel}"


def load_run(run: Path):
    """(recipe, data, fp32 student, tokenizer) of a finished run; SystemExit with one line when it cannot serve."""
    import json

    from compress.model import load_checkpoint
    from compress.pipeline.data import load_run_data
    from compress.recipe import parse_recipe

    if not (run / "student_fp32").is_dir() or not (run / "recipe.json").is_file():
        raise SystemExit(f"error: {run} needs student_fp32/ and recipe.json; pass a finished run folder (--run)")
    recipe = parse_recipe(json.loads((run / "recipe.json").read_text(encoding="utf-8")), source=str(run / "recipe.json"))
    if recipe.data.split_seed is None:
        raise SystemExit(f"error: {run} is not an S/K/U-world run (data.split_seed unset): val, val_known and known "
                         "exist only there; pass a run of a recipe that sets data.split_seed")
    data = load_run_data(recipe.data, recipe.seed)
    missing = [s for s in WORLD_SPLITS if len(data.eval_splits.get(s, ())) == 0]
    if missing:
        raise SystemExit(f"error: {run}'s data has no {', '.join(missing)} split; rebuild its emoji cache with a "
                         "version that renders val")
    model, tokenizer, _ = load_checkpoint(run / "student_fp32")
    return recipe, data, model, tokenizer


def with_ptq(recipe, settings):
    """The recipe with its qat.ptq_* keys set to `settings` (every post-training calibration of the run uses them)."""
    return recipe.model_copy(update={"qat": recipe.qat.model_copy(update={
        "ptq_calibration_batches": settings.batches, "ptq_observer": settings.observer,
        "ptq_per_channel": settings.per_channel})})


def correct(quantized, tokenizer, split, names: dict, batch_size: int) -> dict[str, str]:
    """Per language, each image's top-1 correctness ('1' / '0') for a quantized model, zero-shot on `split`."""
    from compress.eval.metrics import target_ranks
    from compress.eval.zero_shot import Encoders, zero_shot_scores

    enc = Encoders("quantized", quantized.image, lambda texts: quantized.text(tokenizer(texts)), 0)
    targets, scores = zero_shot_scores(enc, split.images, split.labels, split.class_ids, names, batch_size)
    return {lang: "".join("1" if r == 0 else "0" for r in target_ranks(s, targets).tolist()) for lang, s in scores.items()}


def top1(bits: str) -> float:
    return bits.count("1") / len(bits)


def score(quantized, tokenizer, data, splits, batch_size: int) -> dict[str, dict[str, str]]:
    return {s: correct(quantized, tokenizer, data.eval_splits[s], data.names, batch_size) for s in splits}


def summary(scores: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    return {s: {lang: top1(bits) for lang, bits in by_lang.items()} for s, by_lang in scores.items()}


def tune(result: dict, recipe, data, model, tokenizer, save) -> str:
    """Score ptq-int8 at every grid point not yet in `result["grid"]` on the choice splits; the best point's key."""
    from compress.pipeline.quantize import post_training
    from compress.quant.schemes import get_scheme

    grid = result.setdefault("grid", {})
    for settings in grid_points():
        key = point_key(settings)
        if key in grid:
            continue
        q = post_training(get_scheme("ptq-int8"), model.image, model.text, model, data, tokenizer, settings)
        top = summary(score(q, tokenizer, data, CHOICE_SPLITS, recipe.eval.batch_size))
        grid[key] = {"settings": settings.as_dict(), "top1": top,
                     "mean": sum(v for by_lang in top.values() for v in by_lang.values()) / (2 * len(CHOICE_SPLITS))}
        print(f"grid {key}: mean top-1 on {' + '.join(CHOICE_SPLITS)} {grid[key]['mean']:.4f}")
        save()
    keys = [point_key(s) for s in grid_points()]
    return max(keys, key=lambda k: grid[k]["mean"])  # the first of equals: today's settings win ties


def build_models(result: dict, recipe, data, model, tokenizer, settings, scratch: Path, save) -> None:
    """The three models at the chosen settings, each by the QAT stage's own `quantize_scheme`, scored on the report
    splits; a model already built at these settings is kept."""
    from compress.pipeline.quantize import quantize_scheme
    from compress.pipeline.state import RunState

    run_recipe, key = with_ptq(recipe, settings), point_key(settings)
    models = result.setdefault("models", {})
    for name in MODELS:
        if models.get(name, {}).get("ptq") == key:
            continue
        folder = scratch / f"{name}-{key}"  # a killed fine-tune resumes from its own checkpoints here
        state = RunState(run_recipe, folder, resume=folder.is_dir(), distributed=False)
        q = quantize_scheme(state, data, model, tokenizer, name, headline=name == "int8")
        correct_bits = score(q, tokenizer, data, REPORT_SPLITS, recipe.eval.batch_size)
        models[name] = {"ptq": key, "top1": summary(correct_bits), "correct": correct_bits,
                        "history": state.history, "quantization": q.config}
        print(f"{name}: " + ", ".join(f"{s} en {t['en']:.3f} zh {t['zh']:.3f}" for s, t in models[name]["top1"].items()))
        save()
        shutil.rmtree(folder, ignore_errors=True)


def gains(models: dict, data) -> dict:
    """QAT (int8) against each baseline, per report split and language: points, 95% class-bootstrap interval and
    McNemar's p, on the same images."""
    import numpy as np

    from compress.eval.stats import mcnemar, paired_bootstrap_ci

    out: dict = {}
    for base in ("ft-ptq-int8", "ptq-int8"):
        for split in REPORT_SPLITS:
            clusters = data.eval_splits[split].labels.numpy()
            for lang in LANGS:
                a = np.frombuffer(models[base]["correct"][split][lang].encode(), dtype=np.uint8) - ord("0")
                b = np.frombuffer(models["int8"]["correct"][split][lang].encode(), dtype=np.uint8) - ord("0")
                ci = paired_bootstrap_ci(a, b, clusters)
                out.setdefault(f"int8 - {base}", {}).setdefault(split, {})[lang] = {**ci, "mcnemar_p": mcnemar(a, b)["p"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished S/K/U-world run folder (student_fp32/, recipe.json)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/qat_vs_ptq.json"))
    args = ap.parse_args()
    import json

    from compress.atomic import write_json

    recipe, data, model, tokenizer = load_run(args.run)
    if recipe.qat.epochs == 0:
        raise SystemExit(f"error: {args.run}'s recipe has qat.epochs 0: QAT and ft-ptq-int8 would both be ptq-int8; "
                         "pass a run whose QAT trains")
    result = {"run": str(args.run), "fingerprint": recipe.fingerprint()}
    if args.out.is_file():
        old = json.loads(args.out.read_text(encoding="utf-8"))
        if old.get("fingerprint") != result["fingerprint"]:
            raise SystemExit(f"error: {args.out} holds another run's results (fingerprint {old.get('fingerprint')}); "
                             "pass another --out or delete it")
        result = {**old, **result}
    result["images"] = {s: len(data.eval_splits[s]) for s in (*REPORT_SPLITS, "val_known")}
    result["qat"] = {k: v for k, v in recipe.qat.model_dump().items() if k not in ("compare", "scheme")}
    save = lambda: write_json(args.out, result)  # noqa: E731 - after every grid point and model
    chosen = tune(result, recipe, data, model, tokenizer, save)
    result["chosen"] = chosen
    settings = next(s for s in grid_points() if point_key(s) == chosen)
    print(f"chosen on {' + '.join(CHOICE_SPLITS)}: {chosen}")
    build_models(result, recipe, data, model, tokenizer, settings, args.out.with_suffix(".scratch"), save)
    result["gains"] = gains(result["models"], data)
    save()
    shutil.rmtree(args.out.with_suffix(".scratch"), ignore_errors=True)
    for pair, by_split in result["gains"].items():
        for split, by_lang in by_split.items():
            print(f"{pair} {split}: " + ", ".join(
                f"{lang} {g['diff']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}] p={g['mcnemar_p']:.3g}" for lang, g in by_lang.items()))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
