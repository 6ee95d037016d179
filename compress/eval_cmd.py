"""`dcclip-compress eval`: any model kind, measured the same way on emoji-zh-en."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from compress.errors import UserError
from compress.evaluate import Encoders, eager_encoders, teacher_encoders, zero_shot
from compress.prompts import LANGS

KNOWN_SPLITS = ("eval", "transfer", "unseen")


def resolve_encoders(spec: str) -> Encoders:
    """A student checkpoint/run, an export folder or .pte, `reference`, or an HF CLIP-family id/folder."""
    from compress.pipeline import ensure_reference_teacher

    path = Path(spec)
    if spec == "reference":
        from compress.teachers.reference import ReferenceTeacher

        return teacher_encoders(ReferenceTeacher.from_folder(ensure_reference_teacher("recipes/emoji_teacher.yaml")))
    if path.suffix == ".pte" or (path / "bundle.json").is_file():
        return pte_bundle_encoders(path)
    if (path / "student_fp32" / "model.json").is_file():
        path = path / "student_fp32"
    if (path / "model.json").is_file():
        from compress.model import load_checkpoint

        model, tokenizer, _ = load_checkpoint(path)
        return eager_encoders(str(path), model, tokenizer)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        raise UserError(f"{spec!r} is a file, not a model; pass a checkpoint or run folder, a .pte, or a hub id")
    from compress.teachers.hf import HFTeacher

    return teacher_encoders(HFTeacher.from_pretrained(spec))


def pte_bundle_encoders(path: Path) -> Encoders:
    from compress.stages import pte_encoders
    from compress.tokenizer import BilingualTokenizer

    folder = path.parent if path.suffix == ".pte" else path
    if path.suffix == ".pte" and not path.is_file():
        raise UserError(f"{str(path)!r} not found; pass an exported .pte or its export folder")
    bundle_path = folder / "bundle.json"
    if not bundle_path.is_file():
        raise UserError(f"{str(folder)!r} has no bundle.json; pass the export folder written by `dcclip-compress export`")
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    quant = path.stem.split("_")[-1] if path.suffix == ".pte" else ("int8" if "int8" in bundle["files"] else "fp32")
    if quant not in bundle["files"]:
        raise UserError(f"{str(folder)!r} holds no {quant} export; available: {', '.join(bundle['files'])}")
    files = {t: folder / name for t, name in bundle["files"][quant].items()}
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", bundle["context_length"])
    return pte_encoders(f"{folder.name}:{quant}", files, tokenizer, params=int(bundle.get("params", 0)))


def run_data_settings(spec: str) -> dict:
    """Data settings of the run a model came from, so its unseen classes stay unseen in a later eval."""
    path = Path(spec)
    for folder in (path, path.parent, path.parent.parent):
        recipe = folder / "recipe.json"
        if recipe.is_file():
            r = json.loads(recipe.read_text(encoding="utf-8"))
            d = r.get("data", {})
            return {"image_size": d.get("image_size"), "limit": d.get("limit"), "unseen_fraction": d.get("unseen_fraction"),
                    "seed": r.get("seed", 0), "cache_dir": d.get("cache_dir")}
    return {}


def evaluate_model(spec: str, splits: Sequence[str], langs: Sequence[str], image_size: int | None = None,
                   limit: int | None = None, unseen_fraction: float | None = None) -> dict:
    bad = [s for s in splits if s not in KNOWN_SPLITS]
    if bad:
        raise UserError(f"--splits: {bad[0]!r} is not a split; choose from {', '.join(KNOWN_SPLITS)}")
    bad = [l for l in langs if l not in LANGS]
    if bad:
        raise UserError(f"--lang: {bad[0]!r} is not supported; choose from {', '.join(LANGS)}")
    from compress.data.emoji import build_emoji_dataset

    run = run_data_settings(spec)
    enc = resolve_encoders(spec)
    data = build_emoji_dataset(
        run.get("cache_dir") or ".cache/emoji", image_size=image_size or run.get("image_size") or 64,
        limit=limit or run.get("limit"), seed=run.get("seed", 0),
        unseen_fraction=unseen_fraction if unseen_fraction is not None else run.get("unseen_fraction", 0.4),
    )
    names = {"en": {c.index: c.en for c in data.classes}, "zh": {c.index: c.zh for c in data.classes}}
    out = {"model": enc.name, "params": enc.params, "zero_shot": {}}
    for s in splits:
        sp = data.splits[s]
        if len(sp):
            out["zero_shot"][s] = zero_shot(enc, sp.images, sp.labels, sp.class_ids, names, langs=langs)
    return out


def format_table(spec: str, result: dict) -> str:
    lines = [f"model: {spec} ({result['params'] / 1e6:.2f}M params)", "", "| split | lang | top-1 % | top-5 % |", "|---|---|---|---|"]
    for split, by_lang in result["zero_shot"].items():
        for lang, r in by_lang.items():
            lines.append(f"| {split} | {lang} | {100 * r['top1']:.1f} | {100 * r['top5']:.1f} |")
    return "\n".join(lines)
