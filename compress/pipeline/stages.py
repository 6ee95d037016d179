"""The glue between the pipeline and each stage module: what each stage reads from and leaves in the run folder."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compress.pipeline.data import RunData
from compress.eval.zero_shot import Encoders, eager_encoders, teacher_encoders, zero_shot
from compress.atomic import write_json
from compress.model import DualEncoder, DualEncoderSpec, load_checkpoint, save_checkpoint
from compress.prompts import EVAL_TEMPLATE, TEMPLATES
from compress.progress import log
from compress.recipe.schema import Recipe
from compress.teachers.base import Teacher
from compress.tokenizer import BilingualTokenizer, train_tokenizer
from compress.train import loop
from compress.train.align import AlignStage
from compress.train.distill import DistillStage, OnlineTargets


@dataclass
class Quantized:
    image: nn.Module
    text: nn.Module
    config: dict


@dataclass
class Exported:
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # quant -> tower -> path
    delegation: dict[str, dict[str, dict]] = field(default_factory=dict)
    vela: dict[str, dict[str, dict]] = field(default_factory=dict)  # Ethos-U target -> tower -> Vela estimate metrics


def tokenizer_corpus(data: RunData) -> list[str]:
    """Every caption training can produce, in both languages: what the WordPiece vocabulary is trained on."""
    texts = []
    for lang in ("en", "zh"):
        if data.train.templated:
            names = [n for n in (data.train.en if lang == "en" else data.train.zh) if n is not None]
            texts += [t.format(n) for n in names for t in TEMPLATES[lang]]
        else:
            texts += data.train.texts(lang)
    return texts


def build_student(recipe: Recipe, tokenizer: BilingualTokenizer) -> DualEncoder:
    s = recipe.students
    spec = DualEncoderSpec(
        image_arch=s.image.arch, text_arch=s.text.arch, embed_dim=s.embed_dim, image_size=recipe.data.image_size,
        context_length=s.text.context_length, vocab_size=tokenizer.vocab_size,
        image_spec=s.image.spec, text_spec=s.text.spec,  # arch: custom (a searched architecture)
    )
    torch.manual_seed(recipe.seed)
    return DualEncoder(spec, init_temperature=recipe.align.init_temperature)


def example_inputs(model: DualEncoder, batch: int) -> tuple[tuple[torch.Tensor], tuple[torch.Tensor]]:
    """Shapes for capture/lowering: pixels, and ids that are half padding (the mask path must be traced)."""
    s = model.spec
    pixels = torch.rand(batch, 3, s.image_size, s.image_size)
    ids = torch.randint(2, s.vocab_size, (batch, s.context_length))
    ids[:, s.context_length // 2 :] = 0
    return (pixels,), (ids,)


def pte_metadata(model: DualEncoder, tokenizer: BilingualTokenizer) -> dict:
    """What the phone needs besides the weights; embedded in each .pte and repeated in bundle.json."""
    s = model.spec
    return {
        "embed_dim": s.embed_dim, "image_size": s.image_size, "context_length": s.context_length,
        "pad_id": tokenizer.pad_id, "logit_scale": float(model.logit_scale.detach().exp()),
    }


def write_bundle(folder: Path, model: DualEncoder, tokenizer: BilingualTokenizer, target: str,
                 files: dict[str, dict[str, str]]) -> Path:
    """export folder = .pte files + tokenizer.json + bundle.json (input layout, metadata, prompts, file names)."""
    tokenizer.save(folder / "tokenizer.json")
    write_json(folder / "bundle.json", {
        **pte_metadata(model, tokenizer), "params": model.tower_params(), "target": target,
        "input": "image: float32 RGB in [0,1], NCHW (1,3,H,W); normalisation is inside the model",
        "text_input": "int64 token ids (1, context_length), tokenizer.json, padded with pad_id",
        "prompt_templates": EVAL_TEMPLATE, "files": files,
    })
    return folder / "bundle.json"


def stage1_targets(recipe: Recipe, data: RunData, teacher: Teacher | None):
    """Stage-1 targets: read from the teacher-feature cache when the recipe names one (no teacher in memory),
    else computed by the teacher on every batch."""
    if recipe.teacher.cache is None:
        return OnlineTargets(teacher)
    from compress.teachers.cache import CachedTargets, cache_fingerprint

    log(f"stage 1: teacher targets from the cache {recipe.teacher.cache}")
    return CachedTargets(recipe.teacher.cache, cache_fingerprint(recipe, data.train))


def loop_context(state, stage_offset: int, distributed: bool = True) -> loop.LoopContext:
    """Each stage seeds the global RNG itself, so a run resumed between stages draws exactly what a clean one does."""
    recipe = state.recipe
    torch.manual_seed(recipe.seed + stage_offset)
    return loop.LoopContext(state.out, recipe.seed + stage_offset, recipe.training, state.resume,
                            distributed=distributed and state.distributed)


def train_fp32(state, data: RunData, teacher: Teacher | None) -> tuple[DualEncoder, BilingualTokenizer]:
    """tokenizer -> student -> stage 1 (its artifact: student_distill/) -> stage 2 (student_fp32/).

    Each finished stage leaves its artifact; `--resume` skips a stage whose artifact is there and continues an
    unfinished one from its newest mid-stage checkpoint.
    """
    recipe, out = state.recipe, state.out
    final = out / "student_fp32"
    if state.resume and (final / "model.json").is_file():  # model.json is written last: the folder is complete
        log(f"resume: loading {final}")
        model, tokenizer, meta = load_checkpoint(final)
        state.history.update(meta.get("history", {}))
        return model, tokenizer
    distilled = out / "student_distill"
    if state.resume and (distilled / "model.json").is_file():
        log(f"resume: loading {distilled}")
        model, tokenizer, meta = load_checkpoint(distilled)
        state.history.update(meta.get("history", {}))
    else:
        with state.stage("tokenizer"):
            t = recipe.students.text
            tokenizer = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data), t.vocab_size), t.context_length)
        model = build_student(recipe, tokenizer)
        cached = recipe.teacher.cache is not None
        if recipe.distill.enabled and (teacher is not None or cached) and recipe.distill.epochs > 0:
            with state.stage("distill"):
                ctx = loop_context(state, 0)
                targets = stage1_targets(recipe, data, teacher)
                ctx.views = getattr(targets, "views", None)  # a K-view cache: the plan draws views from range(K)
                stage = DistillStage(model, targets, recipe.distill, seed=recipe.seed)
                hist = loop.train(stage, data.train, tokenizer, recipe.distill, ctx)
                model.eval()
                state.history["distill"] = hist.as_dict()
                if loop.is_main_process():
                    save_checkpoint(model, tokenizer, distilled, {"history": state.history})
                loop.clear_checkpoints(out, stage.name)
    if recipe.align.enabled and recipe.align.epochs > 0:
        with state.stage("align"):
            ctx = loop_context(state, 1)
            model.train()
            stage = AlignStage(model.image, model.text, model.logit_scale, recipe.align, teacher=teacher)
            hist = loop.train(stage, data.train, tokenizer, recipe.align, ctx)
            model.eval()
            state.history["align"] = hist.as_dict()
    if loop.is_main_process():
        save_checkpoint(model, tokenizer, final, {"history": state.history, "recipe": recipe.name})
        loop.clear_checkpoints(out, "align")
    return model.eval(), tokenizer


def calibration_batches(train, tokenizer: BilingualTokenizer, batches: int = 4, size: int = 64):
    """The first `batches` x `size` training images and their captions (eval template, both languages): what
    post-training quantization observes. Deterministic, so ptq-int8 is the same on every rerun."""
    from compress.data.augment import to_float
    from compress.prompts import caption

    for i in range(batches):
        rows = slice(i * size, (i + 1) * size)
        if rows.start >= len(train):
            return
        groups = train.groups[rows].tolist()
        texts = [caption(n, lang) if train.templated else n
                 for lang in ("en", "zh") for n in (getattr(train, lang)[g] for g in groups) if n is not None]
        yield to_float(train.images[rows]), tokenizer(texts)


def _calibrate(scheme, image: nn.Module, text: nn.Module, data: RunData, tokenizer: BilingualTokenizer) -> None:
    """The calibration batches through both prepared towers in eval form (observers record, nothing trains)."""
    scheme.set_train(image, False)
    scheme.set_train(text, False)
    with torch.no_grad():
        for pixels, ids in calibration_batches(data.train, tokenizer):
            image(pixels)
            text(ids)


def _quantize_scheme(state, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer, name: str,
                     headline: bool) -> Quantized:
    """prepare -> QAT (the recipe's qat settings) or calibration -> convert, for one scheme, on copies of the towers."""
    from compress.quant.schemes import get_scheme

    recipe, scheme = state.recipe, get_scheme(name)
    stage_name = "qat" if headline else f"qat-{name}"
    ex_img, ex_txt = example_inputs(model, 2)
    ctx = loop_context(state, 2, distributed=False)  # every scheme sees the same seed and batch order
    image = scheme.prepare(copy.deepcopy(model.image), ex_img)
    text = scheme.prepare(copy.deepcopy(model.text), ex_txt)
    if scheme.trains and recipe.qat.epochs > 0:
        if recipe.qat.calibrate and scheme.calibrated_by:
            ptq = get_scheme(scheme.calibrated_by)
            c_img, c_txt = ptq.prepare(copy.deepcopy(model.image), ex_img), ptq.prepare(copy.deepcopy(model.text), ex_txt)
            _calibrate(ptq, c_img, c_txt, data, tokenizer)
            frozen = scheme.seed_activation_ranges(image, c_img) + scheme.seed_activation_ranges(text, c_txt)
            log(f"{stage_name}: started from {scheme.calibrated_by}'s activation ranges ({frozen} frozen)")
        scheme.set_train(image, True)
        scheme.set_train(text, True)
        logit_scale = nn.Parameter(model.logit_scale.detach().clone())
        cfg = recipe.align.model_copy(update={
            "epochs": recipe.qat.epochs, "batch_size": recipe.qat.batch_size, "lr": recipe.qat.lr,
            "weight_decay": recipe.qat.weight_decay, "warmup": recipe.qat.warmup, "grad_accum": recipe.qat.grad_accum,
            "clip_grad_norm": recipe.qat.clip_grad_norm, "image_lr_scale": 1.0, "affinity_weight": 0.0,
        })
        reference = (tuple(copy.deepcopy(m).eval().requires_grad_(False) for m in (model.image, model.text))
                     if recipe.qat.self_distill > 0 else None)
        stage = AlignStage(image, text, logit_scale, cfg, trim_text=False, name=stage_name,
                           description=f"QAT ({name} fake-quant)", reference=reference,
                           reference_weight=recipe.qat.self_distill, contrastive_weight=recipe.qat.contrastive)
        hist = loop.train(stage, data.train, tokenizer, cfg, ctx)
        state.history[stage_name] = hist.as_dict()
        loop.clear_checkpoints(state.out, stage_name)
    if scheme.calibrates:
        _calibrate(scheme, image, text, data, tokenizer)
    scheme.set_train(image, False)
    scheme.set_train(text, False)
    return Quantized(scheme.convert(image.cpu()), scheme.convert(text.cpu()), scheme.config())


def quantize(state, data: RunData, model: DualEncoder, tokenizer: BilingualTokenizer) -> dict[str, Quantized]:
    """The recipe's quantization schemes (`qat.scheme` first, then `qat.compare`), on the main process alone (a
    captured graph is not wrapped for data parallelism). {} when QAT is off or no quantized export is asked for."""
    recipe = state.recipe
    if not recipe.qat.enabled or "int8" not in recipe.export.quant:
        return {}
    result: dict[str, Quantized] = {}
    model = model.cpu().eval()
    for i, name in enumerate(recipe.qat.schemes):
        with state.stage("qat" if i == 0 else f"qat-{name}"):
            result[name] = _quantize_scheme(state, data, model, tokenizer, name, headline=i == 0)
    return result


def export(state, model: DualEncoder, tokenizer: BilingualTokenizer, quantized: dict[str, Quantized]) -> Exported:
    recipe, out = state.recipe, state.out
    result = Exported()
    if not recipe.export.enabled:
        return result
    from mobile_export.lower.capture import lower_to_pte, save_pte

    folder = out / "export"
    (folder / "manifest.json").unlink(missing_ok=True)  # a previous bundle's hashes must not vet the new .pte files
    with state.stage("export"):
        model = model.cpu().eval()
        ex_img, ex_txt = example_inputs(model, 1)
        metadata = pte_metadata(model, tokenizer)
        # export.quant "int8" stands for every quantized scheme the run built (qat.scheme, then qat.compare)
        precisions = [q for p in recipe.export.quant for q in (["fp32"] if p == "fp32" else list(quantized))]
        for quant in precisions:
            towers = {"image": (model.image, ex_img), "text": (model.text, ex_txt)}
            if quant in quantized:
                towers = {"image": (quantized[quant].image, ex_img), "text": (quantized[quant].text, ex_txt)}
            for tower, (module, ex) in towers.items():
                program = lower_to_pte(module, ex, target=recipe.export.target, metadata=metadata)
                path = folder / f"{tower}_{quant}.pte"
                save_pte(program, path)
                result.files.setdefault(quant, {})[tower] = path
                delegation = program.delegation
                if program.estimate is None:  # ETDump time share of the left-out ops (mobile_export/delegation.py)
                    from mobile_export.bundle.delegation import xnnpack_report

                    delegation = xnnpack_report(program.delegation, path, ex)
                result.delegation.setdefault(quant, {})[tower] = delegation
                log(f"export: {path} ({path.stat().st_size / 1e6:.2f} MB)")
        files = {q: {t: p.name for t, p in d.items()} for q, d in result.files.items()}
        from mobile_export.bundle.delegation import write_delegation

        write_delegation(folder, {f"{t}_{q}.pte": d for q, towers in result.delegation.items() for t, d in towers.items()})
        from mobile_export.bundle.write import write_export_bundle

        for line in write_export_bundle(folder, model, tokenizer, recipe.export.target, files):  # app-ready bundle
            log(f"export: {line}")
        for npu in recipe.export.npu:  # Arm Ethos-U: int8 with the Arm quantizer, Vela's estimate per tower
            from compress.pipeline.export import _export_ethos_u
            from mobile_export.lower.ethosu import estimate_metrics, read_estimate

            for line in _export_ethos_u(out, npu, out / f"export-{npu}"):
                log(f"export {npu}: {line}")
            result.vela[npu] = {t: estimate_metrics(read_estimate(out / f"export-{npu}" / f"{t}_int8.pte"))
                                for t in ("image", "text")}
    return result


def pte_encoders(name: str, files: dict[str, Path], tokenizer: BilingualTokenizer, params: int, image_size: int) -> Encoders:
    from mobile_export.runtime import PteModule

    image, text = PteModule(files["image"]), PteModule(files["text"])
    return Encoders(name, lambda x: image(x), lambda texts: text(tokenizer(texts)), params, image_size)


def evaluate(state, data: RunData, teacher, model, tokenizer, quantized, exported) -> dict:
    recipe = state.recipe
    models: dict[str, Encoders] = {}
    if teacher is not None:
        models["teacher"] = teacher_encoders(teacher)
    models["student_fp32"] = eager_encoders("student_fp32", model, tokenizer)
    params = model.tower_params()
    headline = next(iter(quantized), None)  # the trained scheme is also evaluated eagerly (converted graph)
    if headline is not None:
        q = quantized[headline]
        models[f"student_{headline}"] = Encoders(f"student_{headline}", q.image, lambda t: q.text(tokenizer(t)), params,
                                                 model.spec.image_size)
    for quant, files in exported.files.items():
        models[f"student_{quant}_pte"] = pte_encoders(f"student_{quant}_pte", files, tokenizer, params, model.spec.image_size)
    results: dict[str, dict] = {}
    for key, enc in models.items():
        entry: dict = {"params": int(enc.params), "zero_shot": {}}
        for split in recipe.eval.splits:
            sp = data.eval_splits.get(split)
            if sp is None or len(sp) == 0:
                continue
            entry["zero_shot"][split] = zero_shot(enc, sp.images, sp.labels, sp.class_ids, data.names, recipe.eval.batch_size)
        log(f"eval {key}: " + ", ".join(
            f"{s} en {r['en']['top1']:.3f} zh {r['zh']['top1']:.3f}" for s, r in entry["zero_shot"].items()))
        results[key] = entry
    if exported.files:
        from mobile_export.bench.run import host_latency

        ex_img, ex_txt = example_inputs(model.cpu(), 1)
        for quant, files in exported.files.items():
            entry = results[f"student_{quant}_pte"]
            entry["pte_bytes"] = {t: p.stat().st_size for t, p in files.items()}
            bench = {t: host_latency(p, ex_img if t == "image" else ex_txt, runs=recipe.eval.latency_runs) for t, p in files.items()}
            entry["latency"] = bench
            entry["latency_ms"] = {t: b["median_inference_latency(ms)"] for t, b in bench.items()}
            entry["delegation"] = exported.delegation.get(quant, {})
            if quant == "int8" and exported.vela:
                entry["vela"] = exported.vela
    for name, q in quantized.items():  # the exact config of every scheme, beside its numbers
        results.setdefault(f"student_{name}_pte" if f"student_{name}_pte" in results else f"student_{name}", {})[
            "quantization"] = q.config
    if headline is not None and f"student_{headline}" in results:
        results[f"student_{headline}"]["quantization"] = quantized[headline].config
    return results
