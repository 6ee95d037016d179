"""`dcclip-compress eval`: any model kind, any suite, en and zh side by side.

MODEL is a teacher (HF id or folder, `reference`, or `RUN/teacher` for the teacher a run distilled from), a student
checkpoint or run folder, or an export folder / `.pte` (which runs through the ExecuTorch runtime). Several MODELs are compared in one table, with deltas against
the first; `label=MODEL` names a column. Image embeddings are computed once per (model, dataset) and class text
embeddings once per (model, class set, language).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from compress.data.augment import resize_uint8
from compress.errors import UserError
from compress.home import runs_dir
from compress.readers import field, guarded, read_json
from compress.eval.zero_shot import Encoders, eager_encoders, teacher_encoders, zero_shot
from compress.prompts import LANGS
from compress.recipe.schema import EVAL_SPLITS  # every split a world can have

KNOWN_SPLITS = ("eval", "transfer", "unseen")  # the default; the S/K/U world adds known and the unseen strata
DEFAULT_DATA_ROOT = "data/elevater"


@dataclass
class EvalModel:
    label: str
    spec: str
    enc: Encoders


def resolve_encoders(spec: str) -> Encoders:
    """A student checkpoint/run, an export folder or .pte, `reference`, `RUN/teacher`, or an HF CLIP-family id/folder
    (compress/pipeline/refs.py says which)."""
    from compress.pipeline.refs import resolve_ref

    ref = resolve_ref(spec)
    if ref.kind == "run_teacher":
        return run_teacher_encoders(ref.run)
    if ref.kind == "reference":
        from compress.pipeline.run import ensure_reference_teacher
        from compress.teachers.reference import ReferenceTeacher

        return teacher_encoders(ReferenceTeacher.from_folder(ensure_reference_teacher("recipes/emoji_teacher.yaml")))
    if ref.kind in ("pte", "bundle"):
        return pte_bundle_encoders(ref.path)
    if ref.kind in ("run", "checkpoint"):
        from compress.model import load_checkpoint

        model, tokenizer, _ = load_checkpoint(ref.checkpoint)
        return eager_encoders(str(ref.checkpoint), model, tokenizer)
    from compress.teachers.hf import HFTeacher

    return teacher_encoders(HFTeacher.from_pretrained(spec))


def run_teacher_encoders(run: Path) -> Encoders:
    """`RUN/teacher`: the teacher that run distilled from (the cached reference teacher trained on that run's classes,
    or its HF teacher), without retraining or re-downloading anything."""
    from compress.pipeline.run import load_teacher
    from compress.recipe.schema import Recipe

    fix = "pass a run folder written by `dcclip-compress run`, or a teacher MODEL"
    doc = read_json(run / "recipe.json", "run recipe", fix)
    recipe = guarded("run recipe", run / "recipe.json", fix, lambda: Recipe.model_validate(doc))
    teacher = load_teacher(recipe)
    if teacher is None:
        raise UserError(f"{str(run)!r} was run without a teacher (teacher.kind: none); pass a teacher MODEL instead")
    return teacher_encoders(teacher)


@dataclass
class OpenBundle:
    """An export bundle's programs of one precision, checked: what eval and the Python API run."""

    folder: Path
    bundle: dict
    quant: str
    files: dict[str, Path]  # tower -> .pte
    tokenizer: object
    image_size: int
    params: int


def open_bundle(path: Path, quant: str | None = None) -> OpenBundle:
    """An export folder (or one of its .pte: that precision) -> its checked bundle.json, programs and tokenizer.
    `quant`: int8 when the bundle has it, else fp32 (else its first)."""
    from compress.tokenizer import BilingualTokenizer

    path = Path(path)
    folder = path.parent if path.suffix == ".pte" else path
    if path.suffix == ".pte" and not path.is_file():
        raise UserError(f"{str(path)!r} not found; pass an exported .pte or its export folder")
    bundle_path = folder / "bundle.json"
    if not bundle_path.is_file():
        raise UserError(f"{str(folder)!r} has no bundle.json; pass the export folder written by `dcclip-compress export`")
    what, fix = "export bundle file", "re-export the bundle with `dcclip-compress export`"
    bundle = read_json(bundle_path, what, fix)
    programs = field(bundle, "files", dict, bundle_path, what, fix)
    if path.suffix == ".pte":
        quant = path.stem.split("_")[-1]
    quant = quant or ("int8" if "int8" in programs else "fp32" if "fp32" in programs else next(iter(programs), "fp32"))
    if quant not in programs:
        raise UserError(f"{str(folder)!r} holds no {quant} export; available: {', '.join(map(str, programs))}")
    towers = field(programs, quant, dict, bundle_path, what, fix)
    if set(towers) < {"image", "text"} or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..")
                                                  for n in towers.values()):
        raise UserError(f"export bundle file {str(bundle_path)!r}: files.{quant} must name an image and a text .pte "
                        f"in its folder; {fix}")
    context = field(bundle, "context_length", int, bundle_path, what, fix)
    size = field(bundle, "image_size", int, bundle_path, what, fix)
    params = field(bundle, "params", int, bundle_path, what, fix, default=0)
    if not (1 <= context <= 8192 and 1 <= size <= 4096):
        raise UserError(f"export bundle file {str(bundle_path)!r}: context_length {context} or image_size {size} is "
                        f"out of range; {fix}")
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", context)
    return OpenBundle(folder, bundle, quant, {t: folder / name for t, name in towers.items()}, tokenizer, size, params)


def pte_bundle_encoders(path: Path) -> Encoders:
    from compress.pipeline.evaluate import pte_encoders

    b = open_bundle(path)
    return pte_encoders(f"{b.folder.name}:{b.quant}", b.files, b.tokenizer, params=b.params, image_size=b.image_size)


def split_label(arg: str) -> tuple[str, str]:
    """`label=spec` names a column; a bare spec is labelled by its last path parts."""
    m = re.fullmatch(r"([A-Za-z][\w.-]{0,31})=(.+)", arg)
    if m and not Path(arg).exists():
        return m.group(1), m.group(2)
    p = Path(arg.rstrip("/"))
    if p.suffix == ".pte":
        return f"{p.parent.name}/{p.stem}", arg
    if p.exists():
        return "/".join(p.parts[-2:]), arg
    return arg, arg


def run_data_settings(spec: str) -> dict:
    """Data settings of the run a model came from, so its unseen classes stay unseen in a later eval."""
    from compress.pipeline.refs import resolve_ref

    r = resolve_ref(spec).recipe()
    if r is None:
        return {}
    d = r.get("data", {})
    return {"image_size": d.get("image_size"), "limit": d.get("limit"), "unseen_fraction": d.get("unseen_fraction"),
            "seed": r.get("seed", 0), "cache_dir": d.get("cache_dir"), "split_seed": d.get("split_seed"),
            "student_fraction": d.get("student_fraction")}


def evaluate_models(
    specs: Sequence[str], suites: Sequence[str], langs: Sequence[str], *, datasets: Sequence[str] | None = None,
    data_root: Path | None = None, manifests: Sequence[Path] = (), splits: Sequence[str] = KNOWN_SPLITS,
    image_size: int | None = None, limit: int | None = None, unseen_fraction: float | None = None,
    batch_size: int = 128,
) -> dict:
    if not specs:
        raise UserError("eval: give at least one MODEL (a run folder, checkpoint, .pte, `reference` or hub id)")
    bad = [l for l in langs if l not in LANGS]
    if bad or not langs:
        raise UserError(f"--lang: {(bad or [''])[0]!r} is not supported; choose from {', '.join(LANGS)}")
    bad = [s for s in splits if s not in EVAL_SPLITS]
    if bad:
        raise UserError(f"--splits: {bad[0]!r} is not a split; choose from {', '.join(EVAL_SPLITS)}")
    from compress.eval.elevater import select_datasets

    chosen = select_datasets(datasets) if "elevater" in suites else []
    manifest_sets = []
    if "retrieval" in suites:
        from compress.eval.retrieval import load_manifest

        manifest_sets = [load_manifest(Path(m), langs) for m in manifests]
    elevater = None  # the data sets are read (and a damaged one refused) before any model is loaded
    if "elevater" in suites:
        from compress.eval.elevater import open_elevater

        root = Path(data_root or os.environ.get("DCCLIP_DATA", DEFAULT_DATA_ROOT))
        elevater = open_elevater(chosen, root)
    labels = [split_label(s) for s in specs]
    dup = [l for l, _ in labels if [x for x, _ in labels].count(l) > 1]
    if dup:
        raise UserError(f"eval: two models are labelled {dup[0]!r}; name them with label=MODEL")
    models = [EvalModel(label, spec, resolve_encoders(spec)) for label, spec in labels]

    result: dict = {
        "models": [{"label": m.label, "spec": m.spec, "params": int(m.enc.params), "image_size": int(m.enc.image_size)}
                   for m in models],
        "langs": list(langs), "suites": list(suites), "results": {}, "skipped": {},
    }
    emoji = _emoji_data([spec for _, spec in labels], image_size, limit, unseen_fraction) if {"emoji", "retrieval"} & set(suites) else None
    if emoji is not None:
        result["emoji_data"] = {"classes": len(emoji.classes), "splits": {s: len(emoji.splits[s]) for s in KNOWN_SPLITS}
                                | {s: len(emoji.splits[s]) for s in splits if s in emoji.splits and s not in KNOWN_SPLITS}}
    if elevater is not None:
        result["data_root"] = str(root)
        result["results"]["elevater"], result["skipped"]["elevater"] = _elevater(models, elevater, langs, batch_size)
    if "emoji" in suites:
        result["results"]["emoji"] = _emoji(models, emoji, splits, langs, batch_size)
    if "retrieval" in suites:
        result["results"]["retrieval"] = _retrieval(models, emoji, manifest_sets, langs, batch_size)
    return result


def compare_models(specs: Sequence[str], suites: Sequence[str], langs: Sequence[str], *, out: Path | None = None,
                   **options) -> tuple[dict, str, dict[str, Path]]:
    """`dcclip-compress eval`: evaluate, write eval.md / eval.json / eval.png; -> (result, markdown table, paths)."""
    from compress.eval.report import REPORT_FILES, is_eval_report, markdown, write_report
    from compress.readers import claim_outputs

    if out is not None:  # refused before an hour of evaluation, not after
        claim_outputs(out, REPORT_FILES, is_eval_report, "eval")
    result = evaluate_models(specs, suites, langs, **options)
    folder = out
    if folder is None:  # the default folder is named after the first model, known only now
        folder = runs_dir("eval") / re.sub(r"[^\w.-]+", "_", result["models"][0]["label"])
        claim_outputs(folder, REPORT_FILES, is_eval_report, "eval")
    return result, markdown(result), write_report(result, folder)


def _elevater(models: Sequence[EvalModel], elevater: tuple, langs, batch_size) -> tuple[dict, dict]:
    from compress.eval.elevater import score_elevater

    opened, skipped = elevater
    return {m.label: score_elevater(m.enc, opened, langs, batch_size) for m in models}, skipped


def _emoji(models: Sequence[EvalModel], emoji, splits, langs, batch_size) -> dict:
    per: dict = {}
    for m in models:
        per[m.label] = {}
        for s in splits:
            sp = emoji.splits.get(s)
            if sp is not None and len(sp):
                per[m.label][s] = zero_shot(m.enc, resize_uint8(sp.images, m.enc.image_size), sp.labels, sp.class_ids,
                                            emoji.names, batch_size, langs)
    return per


def _retrieval(models: Sequence[EvalModel], emoji, manifest_sets, langs, batch_size) -> dict:
    from compress.eval.retrieval import emoji_retrieval_set, evaluate_retrieval

    sp = emoji.splits["eval"]
    sets = [emoji_retrieval_set(sp.images, sp.labels, emoji.names, langs)] + list(manifest_sets)
    return {m.label: {rs.name: evaluate_retrieval(m.enc, rs, langs, batch_size) for rs in sets} for m in models}


def _emoji_data(specs: Sequence[str], image_size, limit, unseen_fraction):
    """One emoji split for every model: the first model's run settings (so its held-out classes stay held out, and
    in the S/K/U world its `known` and `unseen` classes are the run's)."""
    from compress.data.emoji import EmojiData, build_emoji_dataset
    from compress.pipeline.data import world_splits
    from compress.recipe.schema import DataConfig

    run = next((r for r in map(run_data_settings, specs) if r), {})
    unseen = next(v for v in (unseen_fraction, run.get("unseen_fraction"), 0.4) if v is not None)
    world = {k: run[k] for k in ("split_seed", "student_fraction") if run.get(k) is not None}
    emoji = build_emoji_dataset(
        run.get("cache_dir") or ".cache/emoji", image_size=image_size or run.get("image_size") or 64,
        limit=limit or run.get("limit"), seed=world.get("split_seed", run.get("seed", 0)), unseen_fraction=unseen,
        split_seed=world.get("split_seed"),
    )
    _, splits = world_splits(emoji, DataConfig(unseen_fraction=unseen, **world))
    return EmojiData(emoji.classes, splits, seen_ids=emoji.seen_ids)  # the world's eval splits in place of the build's
