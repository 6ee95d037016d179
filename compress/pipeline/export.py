"""`dcclip-compress export`: lower a trained student outside a full run into an app-ready bundle (`bench` and
`verify` live in mobile_export/bench.py and mobile_export/bundle.py)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import torch

from compress.errors import UserError


def _checkpoint_folder(path: Path) -> tuple[Path, Path | None]:
    """-> (checkpoint folder, run folder or None)."""
    if (path / "student_fp32" / "model.json").is_file():
        return path / "student_fp32", path
    if (path / "model.json").is_file():
        run = path.parent if (path.parent / "report.json").is_file() or (path.parent / "export").is_dir() else None
        return path, run
    raise UserError(f"{str(path)!r} is neither a run folder nor a checkpoint folder (model.json + model.safetensors); "
                    "pass runs/<name> or runs/<name>/student_fp32")


def _calibration_batches(image_size: int, n: int = 4, batch: int = 64):
    """Post-training int8 calibration on emoji-zh-en renders and captions, when no QAT export exists."""
    from compress.data.emoji import build_emoji_dataset
    from compress.data.augment import to_float
    from compress.prompts import caption

    data = build_emoji_dataset(".cache/emoji", image_size=image_size)
    train = data.splits["train"]
    names = {c.index: c for c in data.classes}
    for i in range(n):
        sl = slice(i * batch, (i + 1) * batch)
        labels = train.labels[sl].tolist()
        yield to_float(train.images[sl]), [caption(names[l].en, "en") for l in labels] + [caption(names[l].zh, "zh") for l in labels]


def export_checkpoint(path: Path, target: str, quant: str, out: Path | None,
                      labels: Path | None = None) -> Iterator[str]:
    """Lower both towers to `image_<quant>.pte` / `text_<quant>.pte` in `out` and complete the folder into an app
    bundle (mobile_export/bundle.py). `labels`: a user's label file (JSONL/TSV, en + zh); default the emoji classes."""
    from compress.model import load_checkpoint
    from compress.pipeline.stages import example_inputs, pte_metadata
    from mobile_export.bundle.write import read_labels, write_export_bundle
    from mobile_export.lower.capture import lower_to_pte, save_pte
    from mobile_export.pte_check import check_pte
    from mobile_export.lower.targets import get_target

    get_target(target)  # fail fast on an unknown target
    from mobile_export.lower.ethosu import is_ethos_u

    if is_ethos_u(target):
        if quant != "int8":
            raise UserError(f"export: {target} runs int8 only; use --quant int8")
        yield from _export_ethos_u(path, target, out)
        return
    label_set = read_labels(labels) if labels is not None else None  # and on a bad label file, before the slow work
    ckpt, run = _checkpoint_folder(path)
    out = out or ((run or ckpt.parent) / f"export-{target}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # a previous bundle's hashes must not vet the new .pte files
    model, tokenizer, _ = load_checkpoint(ckpt)
    files: dict[str, str] = {}
    qat_dir = run / "export" if run else None
    from compress.quant.schemes import get_scheme, quantize_tower

    scheme = get_scheme(quant)
    if scheme.quantized and target == "xnnpack" and qat_dir and all((qat_dir / f"{t}_{quant}.pte").is_file() for t in ("image", "text")):
        for t in ("image", "text"):
            check_pte(qat_dir / f"{t}_{quant}.pte")  # a damaged run export must not be copied into a bundle
            shutil.copyfile(qat_dir / f"{t}_{quant}.pte", out / f"{t}_{quant}.pte")
            files[t] = f"{t}_{quant}.pte"
            yield f"{t}: reused the run's {'QAT ' if scheme.trains else ''}{quant} export -> {out / files[t]}"
    else:
        image, text = model.image, model.text
        ex_img, ex_txt = example_inputs(model, 1)
        if scheme.quantized:  # no QAT export of this scheme in the run: post-training (int8: the ptq-int8 scheme)
            post = get_scheme("ptq-int8") if quant == "int8" else scheme
            ex2_img, ex2_txt = example_inputs(model, 2)
            batches = list(_calibration_batches(model.spec.image_size))
            image = quantize_tower(post, image, ex2_img, [(pixels,) for pixels, _ in batches])
            text = quantize_tower(post, text, ex2_txt, [(tokenizer(texts),) for _, texts in batches])
            yield f"{quant}: post-training {'calibration ' if post.calibrates else ''}on emoji-zh-en (no {quant} export found in the run)"
        metadata = pte_metadata(model, tokenizer)
        for t, module, ex in (("image", image, ex_img), ("text", text, ex_txt)):
            files[t] = f"{t}_{quant}.pte"
            save_pte(lower_to_pte(module, ex, target=target, metadata=metadata), out / files[t])
            yield f"{t}: {out / files[t]} ({(out / files[t]).stat().st_size / 1e6:.2f} MB)"
    yield from write_export_bundle(out, model, tokenizer, target, {quant: files}, label_set,
                                   label_source=str(labels) if labels is not None else "emoji")



def _export_ethos_u(path: Path, target: str, out: Path | None) -> Iterator[str]:
    """Arm Ethos-U: int8 through the Arm backend's own quantizer (calibrated on emoji-zh-en), Vela compiles each tower
    in a child process; the `.pte` carries Vela's estimate (`bench --device vela`), vela/<tower>/ keeps its CSVs.
    No BundledProgram or label embeddings: nothing on this host can run an Ethos-U program; manifest.json hashes
    every file, so `verify` and the loaders still catch a damaged copy."""
    from compress.atomic import write_json
    from compress.model import load_checkpoint
    from compress.pipeline.stages import example_inputs, pte_metadata, write_bundle
    from mobile_export.lower import ethosu
    from mobile_export.bundle.write import model_info, preprocess_spec, write_npu_manifest
    from mobile_export.bundle.delegation import write_delegation
    from mobile_export.lower.capture import save_pte

    ckpt, run = _checkpoint_folder(path)
    out = out or ((run or ckpt.parent) / f"export-{target}")
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, _ = load_checkpoint(ckpt)
    model.eval()
    ex_img, ex_txt = example_inputs(model, 1)
    batches = list(_calibration_batches(model.spec.image_size, n=2, batch=32))
    towers = {
        "image": (model.image, ex_img, [(pixels,) for pixels, _ in batches]),
        "text": (model.text, ex_txt, [(tokenizer(texts),) for _, texts in batches]),
    }
    metadata = pte_metadata(model, tokenizer)
    files, reports = {}, {}
    for tower, (module, ex, calibration) in towers.items():
        q = ethosu.quantize(module, ex, calibration, target)
        program = ethosu.lower(q, ex, target, metadata, what=f"the {tower} tower ({model.spec.image_arch if tower == 'image' else model.spec.text_arch})",
                               artifacts=out / "vela" / tower)
        files[tower] = f"{tower}_int8.pte"
        save_pte(program, out / files[tower])
        reports[files[tower]] = {"delegation": program.delegation, "estimate": program.estimate}
        yield (f"{tower}: {out / files[tower]} ({(out / files[tower]).stat().st_size / 1e6:.2f} MB; Vela "
               f"{program.estimate['accelerator']}: {program.estimate['inference_time_ms']:.3f} ms, "
               f"{program.estimate['cycles']:.0f} cycles)")
    write_bundle(out, model, tokenizer, target, {"int8": files})
    write_json(out / "preprocess.json", preprocess_spec(model, tokenizer))
    yield f"delegation: {write_delegation(out, reports)}"
    manifest = write_npu_manifest(out, model_info(model), target, files, {t: reports[f]["estimate"] for t, f in files.items()})
    yield (f"bundle: {out / 'bundle.json'}, {manifest} (no BundledProgram or label embeddings: an Ethos-U program "
           "cannot run here; `verify` checks its structure and hashes)")
