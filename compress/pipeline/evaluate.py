"""The eval stage: zero-shot top-1 of the teacher, the fp32 student, the headline quantized student (eagerly) and every
exported program (through the ExecuTorch runtime), on the run's eval splits; host latency of each `.pte`."""
from __future__ import annotations

from pathlib import Path

from compress.eval.zero_shot import Encoders, eager_encoders, teacher_encoders, zero_shot
from compress.model import example_inputs
from compress.pipeline.data import RunData
from compress.progress import log
from compress.tokenizer import BilingualTokenizer
from mobile_export.lower.targets import get_target


def pte_encoders(name: str, files: dict[str, Path], tokenizer: BilingualTokenizer, params: int, image_size: int) -> Encoders:
    from mobile_export.runtime import PteModule

    image, text = PteModule(files["image"]), PteModule(files["text"])
    return Encoders(name, lambda x: image(x), lambda texts: text(tokenizer(texts)), params, image_size)


def evaluate(state, data: RunData, teacher, model, tokenizer, quantized: dict, exported: dict) -> dict:
    recipe = state.recipe
    main = exported["main"]
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
    on_host = bool(main.files) and get_target(recipe.export.target).runs_on_host  # else nothing here runs them
    for quant, files in (main.files.items() if on_host else ()):
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
    if on_host:
        from mobile_export.bench.vela import estimate_metrics
        from mobile_export.timing import host_latency

        npu = {name: {t: estimate_metrics(e) for t, e in ex.estimates.items()}
               for name, ex in exported.items() if name != "main" and ex.estimates}
        ex_img, ex_txt = example_inputs(model.cpu(), 1)
        for quant, files in main.files.items():
            entry = results[f"student_{quant}_pte"]
            entry["pte_bytes"] = {t: p.stat().st_size for t, p in files.items()}
            bench = {t: host_latency(p, ex_img if t == "image" else ex_txt, runs=recipe.eval.latency_runs) for t, p in files.items()}
            entry["latency"] = bench
            entry["latency_ms"] = {t: b["median_inference_latency(ms)"] for t, b in bench.items()}
            entry["delegation"] = main.delegation.get(quant, {})
            if quant == "int8" and npu:
                entry["vela"] = npu
    for name, q in quantized.items():  # the exact config of every scheme, beside its numbers
        results.setdefault(f"student_{name}_pte" if f"student_{name}_pte" in results else f"student_{name}", {})[
            "quantization"] = q.config
    if headline is not None and f"student_{headline}" in results:
        results[f"student_{headline}"]["quantization"] = quantized[headline].config
    return results
