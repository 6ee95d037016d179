"""One export for every target: the run's export stage (model in memory) and `dcclip-compress export` (a run or a
checkpoint on disk) both call `export_model`.

Per tower and precision: the fp32 tower, the run's own quantized tower (QAT), or post-training int8 calibrated on
the run's training split (`compress/quant/calibrate.py`: never a default build, so `unseen` classes stay unseen).
The target decides the rest: a backend with its own quantizer (Arm Ethos-U) quantizes with it, every target lowers
with its own partitioner (`get_target(name).lower`), and the bundle writer picks the layout the target can use.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from compress.errors import UserError
from compress.readers import read_json
from compress.model import DualEncoder, example_inputs, load_checkpoint
from compress.progress import log
from compress.prompts import Templates, data_templates, with_templates
from compress.quant.calibrate import Calibration, calibration_set
from compress.tokenizer import BilingualTokenizer
from mobile_export.bundle.delegation import delegation_report, write_delegation
from mobile_export.bundle.write import pte_metadata, write_export_bundle
from mobile_export.lower.capture import save_pte
from mobile_export.lower.targets import Target, get_target

Say = Callable[[str], None]


@dataclass
class Exported:
    folder: Path | None = None
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # quant -> tower -> path
    delegation: dict[str, dict[str, dict]] = field(default_factory=dict)
    estimates: dict[str, dict] = field(default_factory=dict)  # tower -> the compiler's estimate (Ethos-U: Vela)


def _post_training(target: Target, quant: str, tower: str, module, model: DualEncoder, calibration: Calibration):
    """Post-training int8 of one tower: the backend's own quantizer when it has one, else the project's scheme
    (`int8` means `ptq-int8` here: there is no QAT result to reuse)."""
    ex = example_inputs(model, 2)[0 if tower == "image" else 1]
    if target.own_quantizer:
        return target.quantize(module, ex, calibration.tower(tower))
    from compress.quant.schemes import get_scheme, quantize_tower

    scheme = get_scheme("ptq-int8" if quant == "int8" else quant)
    return quantize_tower(scheme, module, ex, calibration.tower(tower))


def export_model(model: DualEncoder, tokenizer: BilingualTokenizer, target: str, quants: list[str], folder: Path, *,
                 calibration: Callable[[], Calibration] | None = None, quantized: dict | None = None,
                 reuse: Path | None = None, labels=None, label_source: str = "emoji", say: Say = log,
                 templates: Templates | None = None) -> Exported:
    """Lower both towers at every precision in `quants` into `folder` and complete it into an app bundle.

    `quantized`: scheme -> towers the run already quantized (QAT). `calibration`: builds the run's calibration set,
    called only when a tower needs post-training int8. `reuse`: a folder whose `.pte` files of this target may be
    copied instead of lowered again (the run's own export)."""
    t = get_target(target)
    t.check_available()
    if t.int8_only and any(q == "fp32" for q in quants):
        raise UserError(f"export: {target} runs int8 only; use --quant int8")
    final = folder
    check_bundle_folder(final)
    # Written into a hidden sibling and renamed when complete: a killed export leaves no folder that `verify` or the
    # app would take for a bundle, and the previous bundle (if any) stays whole until the new one replaces it.
    folder = final.parent / f".{final.name}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        result = _export_into(folder, final, model, tokenizer, target, t, quants, calibration, quantized, reuse,
                              labels, label_source, say, templates)
    except BaseException:  # a failed write (a full disk) leaves nothing behind; a kill leaves the hidden sibling
        shutil.rmtree(folder, ignore_errors=True)
        raise
    replace_folder(folder, final)
    result.folder = final
    result.files = {q: {tw: final / p.name for tw, p in d.items()} for q, d in result.files.items()}
    return result


def _export_into(folder: Path, final: Path, model: DualEncoder, tokenizer: BilingualTokenizer, target: str, t: Target,
                 quants: list[str], calibration, quantized, reuse, labels, label_source: str, say: Say,
                 templates: Templates | None = None) -> Exported:
    """export_model's work, into the hidden sibling `folder` (`final` only names it in messages)."""
    from compress.quant.schemes import get_scheme

    model = model.cpu().eval()
    ex_img, ex_txt = example_inputs(model, 1)
    metadata = pte_metadata(model, tokenizer)
    result = Exported(folder)
    cal: Calibration | None = None
    for quant in quants:
        for tower, ex in (("image", ex_img), ("text", ex_txt)):
            path = folder / f"{tower}_{quant}.pte"
            if reuse is not None and (reuse / path.name).is_file() and get_scheme(quant).quantized:
                from mobile_export.pte_check import check_pte

                check_pte(reuse / path.name)  # a damaged run export must not be copied into a bundle
                shutil.copyfile(reuse / path.name, path)
                result.files.setdefault(quant, {})[tower] = path
                say(f"{tower}: reused the run's {'QAT ' if get_scheme(quant).trains else ''}{quant} export -> {path}")
                continue
            module = getattr(model, tower)
            if quant in (quantized or {}) and not t.own_quantizer:
                module = getattr(quantized[quant], tower)
            elif quant != "fp32":
                if calibration is None:
                    raise UserError(f"export: {quant} needs calibration data and none was given")
                if cal is None:
                    cal = calibration()
                    say(f"{quant}: post-training quantization calibrated on {len(cal.groups)} training images of the run")
                module = _post_training(t, quant, tower, module, model, cal)
            arch = model.spec.image_arch if tower == "image" else model.spec.text_arch
            program = t.lower(module, ex, metadata, artifacts=(folder / t.artifacts_name / tower) if t.artifacts_name
                              else None, what=f"the {tower} tower ({arch})")
            save_pte(program, path)
            result.files.setdefault(quant, {})[tower] = path
            result.delegation.setdefault(quant, {})[tower] = delegation_report(program, path, ex)
            if program.estimate is not None:
                result.estimates[tower] = program.estimate
            note = "" if program.estimate is None else (
                f"; {program.estimate['accelerator']} estimate {program.estimate['inference_time_ms']:.3f} ms, "
                f"{program.estimate['cycles']:.0f} cycles")
            say(f"{final / path.name} ({path.stat().st_size / 1e6:.2f} MB{note})")  # where it will be, not .partial
    if result.delegation:
        write_delegation(folder, {f"{tw}_{q}.pte": d for q, towers in result.delegation.items() for tw, d in towers.items()})
    files = {q: {tw: p.name for tw, p in d.items()} for q, d in result.files.items()}
    for line in write_export_bundle(folder, model, tokenizer, target, files, labels, label_source=label_source,
                                    estimates=result.estimates or None, templates=templates):
        say(line.replace(str(folder), str(final)))
    return result


def check_bundle_folder(folder: Path) -> None:
    """`export --out` writes into a new or empty folder, or replaces a bundle of ours (its manifest says so);
    anything else is a user's folder and is refused in one line, untouched."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"export: {str(folder)!r} is a file; choose a folder for the bundle (--out)")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or is_bundle(folder):
        return
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise UserError(f"export: {str(folder)!r} already holds files that are not a dcclip-compress bundle ({shown}); "
                    "choose a new or empty folder (--out)")


def is_bundle(folder: Path) -> bool:
    """Whether `folder` holds a bundle this toolkit wrote (its manifest.json names our format)."""
    from mobile_export.bundle.write import BUNDLE_FORMAT

    try:
        manifest = read_json(folder / "manifest.json", "bundle manifest", "")
    except UserError:
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(BUNDLE_FORMAT.split("/")[0])


def replace_folder(tmp: Path, final: Path) -> None:
    """`tmp` becomes `final`; an old `final` (a bundle of ours, checked before) is moved aside first and removed after."""
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the run's stage
def export_stage(state, data, model: DualEncoder, tokenizer: BilingualTokenizer, quantized: dict) -> dict[str, Exported]:
    """The run's export: `export.target` with every precision the recipe asks for (`int8` stands for every
    quantized scheme the run built), then each `export.npu` target at int8. Keys: `main` and the NPU names."""
    recipe, out = state.recipe, state.out
    if not recipe.export.enabled:
        return {"main": Exported()}
    calibration = lambda: calibration_set(data.train, tokenizer)  # noqa: E731 - built only if a tower needs it
    own = get_target(recipe.export.target).own_quantizer  # its int8 comes from its own quantizer, not the run's QAT
    precisions = [q for p in recipe.export.quant for q in (["fp32"] if p == "fp32" else ["int8"] if own else list(quantized))]
    result: dict[str, Exported] = {}
    with state.stage("export"):
        result["main"] = export_model(model, tokenizer, recipe.export.target, precisions, out / "export",
                                      calibration=calibration, quantized=quantized,
                                      say=lambda line: log(f"export: {line}"),
                                      templates=data_templates(recipe.data.kind))
        for npu in recipe.export.npu:
            result[npu] = export_model(model, tokenizer, npu, ["int8"], out / f"export-{npu}", calibration=calibration,
                                       say=lambda line, npu=npu: log(f"export {npu}: {line}"),
                                       templates=data_templates(recipe.data.kind))
    return result


# ------------------------------------------------------------------------------------------------ the command
def run_calibration(ref, tokenizer: BilingualTokenizer) -> Callable[[], Calibration]:
    """Calibration from the training data a checkpoint was trained on: its run's recipe.json, else the data recorded
    in its model.json; refuses when neither says (a default build could hold the run's unseen classes)."""
    recipe = ref.recipe()
    meta = read_json(ref.checkpoint / "model.json", "checkpoint file", "re-run the stage that wrote it")
    data, seed = (recipe.get("data"), recipe.get("seed", 0)) if recipe else (meta.get("data"), meta.get("seed"))

    def build() -> Calibration:
        if data is None or seed is None:  # refused only when a tower really needs calibrating
            raise UserError(f"export: {str(ref.checkpoint)!r} records no training data to calibrate int8 on (no run "
                            "folder with recipe.json, no data in model.json); export its run folder, or use --quant fp32")
        from compress.pipeline.data import load_run_data
        from compress.recipe.schema import DataConfig

        return calibration_set(load_run_data(DataConfig.model_validate(data), int(seed)).train, tokenizer)

    return build


def _reusable(ref, target: Target) -> Path | None:
    """The run's own export folder when it holds programs of this very checkpoint lowered for the same target (its
    quantized `.pte` can be copied). Only for targets that run here: an NPU program's estimate would not follow a copy."""
    run = ref.run
    if run is None or ref.checkpoint != run / "student_fp32" or not target.runs_on_host:
        return None
    folder = run / "export"
    if not (folder / "bundle.json").is_file():
        return None
    try:
        same = read_json(folder / "bundle.json", "export bundle file", "").get("target") == target.name
        return folder if same else None
    except UserError:  # a damaged earlier export is lowered anew, not copied
        return None


def trained_templates(ref) -> Templates:
    """The label templates that suit what a checkpoint was trained on: its run's recipe data, else model.json's."""
    data = (ref.recipe() or {}).get("data")
    if data is None and ref.checkpoint is not None:
        data = read_json(ref.checkpoint / "model.json", "checkpoint file", "re-run the stage that wrote it").get("data")
    return data_templates((data or {}).get("kind") if isinstance(data, dict) else None)


def export_checkpoint(spec: str | Path | None, target: str, quant: str | None, out: Path | None, labels: str | None = None,
                      say: Say = print, templates: Sequence[str] = ()) -> Path:
    """`dcclip-compress export`: a run or checkpoint folder (default: the newest finished run) -> `out` (default
    `<run>/export-<target>`). `labels`: a label file or a comma-separated list; `templates`: the user's templates."""
    from compress.pipeline.refs import latest_run, student_checkpoint
    from mobile_export.bundle.labels import parse_labels, unknown_warnings

    t = get_target(target)  # an unknown or uninstalled target fails before the slow work
    t.check_available()
    quant = quant or t.default_quant
    if t.int8_only and quant != "int8":
        raise UserError(f"export: {target} runs int8 only; use --quant int8")
    if t.own_quantizer and quant not in ("fp32", "int8"):  # its int8 is its own quantizer's, whatever the name
        raise UserError(f"export: {target} quantizes with its own quantizer; use --quant int8 (or fp32), not {quant}")
    label_set = parse_labels(labels) if labels is not None else None  # and on a bad label file
    if spec is None:
        spec = latest_run("export")
        say(f"export: the newest finished run, {spec}")
    ref = student_checkpoint(spec, "export")
    out = out or ((ref.run or ref.checkpoint.parent) / f"export-{target}")
    templates_used = with_templates(trained_templates(ref), templates)
    model, tokenizer, _ = load_checkpoint(ref.checkpoint)
    if label_set is not None:
        for line in unknown_warnings(tokenizer, label_set):
            say(f"warning: {line}")
    if label_set is not None and not t.runs_on_host:
        say(f"labels: {target} bundles carry no label embeddings (nothing here can run the text program); "
            "embed the labels on the device")
    calibration = run_calibration(ref, tokenizer) if quant != "fp32" else None
    export_model(model, tokenizer, target, [quant], out, calibration=calibration, reuse=_reusable(ref, t),
                 labels=label_set, label_source=labels if labels is not None else "emoji", say=say,
                 templates=templates_used)
    return out
