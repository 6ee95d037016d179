"""Latency table: our students beside the teachers and the peers, all through ExecuTorch XNNPACK on this host.

    python -m bench.latency_table [--threads 1] [--quick] [--only GLOB ...] [--readme]
        ->  bench/out/latency_table.json, bench/out/latency_table.md (and the table into docs/latency.md with --readme)

One command, one process, one thread count for every row. Each row is an eager model lowered with
`get_target("xnnpack").lower` (mobile_export.lower.targets) and timed with `mobile_export.timing.host_latency` (median
over the runs) through the ExecuTorch runtime:

  * teachers: AltCLIP (ViT-L/14 @224 image tower, XLM-R large text tower at 77 tokens) and Chinese-CLIP (ViT-B/16,
    RoBERTa-base at its trained 52 tokens), built from configs with the real BAAI/AltCLIP and
    OFA-Sys/chinese-clip-vit-base-patch16 sizes and random weights (architecture decides latency);
  * peer: MobileCLIP-S0's image tower, timm `fastvit_mci0` reparameterised, at its native 256 px and at 224 px;
  * students (registry names of the recipes' towers) in fp32, int8 and 8da4w, each through the project's own
    scheme of that name (`compress.quant.schemes.get_scheme` + `quantize_tower`: int8 is the PT2E XNNPACK graph,
    observed on a few random calibration batches; 8da4w is torchao's int8 dynamic activations with int4 weights in
    groups of 32 on linear layers), at their trained input size and at 224 px (text: at 77 tokens, the AltCLIP
    tower's length).

MACs are counted on the eager fp32 model at batch 1 with `torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2): the
matmuls, convolutions and attention it has formulas for; elementwise ops, norms and softmax are not counted.
HF teachers are built with `attn_implementation="eager"` (explicit matmul + softmax, as `explicit_attention` does for
timm), so their attention is delegated like ours.

Lowered programs are cached in `.cache/latency_table/`, keyed by (model, tower, precision, input, the row's build
settings, torch/torchao/ExecuTorch versions), with a sidecar JSON (params, MACs, delegation, lowering time and the
process's peak RSS after lowering); timing always reruns. The host is shared: the load average before and after is
recorded, and the ratios (measured side by side in one run) are the numbers to trust, not absolute milliseconds.
"""
from __future__ import annotations

import functools

import argparse
import fnmatch
import gc
import hashlib
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.atomic import write_json, write_text
from compress.errors import UserError

OUT_JSON = Path("bench/out/latency_table.json")
OUT_MD = Path("bench/out/latency_table.md")
CACHE_DIR = Path(".cache/latency_table")
README = Path("docs/latency.md")  # the table lives in the latency docs page
README_START, README_END = "<!-- latency:start -->", "<!-- latency:end -->"
# Part of the cache key: change a precision's entry when the way its rows are built changes (those .pte files are
# then rebuilt, the others kept).
BUILD_VERSIONS = {"fp32": "1", "int8": "pt2e-xnnpack-calib4x4-1", "8da4w": "torchao-8da4w-g32-linear-1"}
ROW_KEYS = ("model", "tower", "precision", "input", "median_ms", "pte_mb", "params", "macs")
PRECISIONS = ("fp32", "int8", "8da4w")
STUDENT_RECIPES = ("recipes/mobilevit_int8.yaml", "recipes/vit_int8.yaml", "recipes/altclip_mobilevit_int8.yaml")
HEADLINE_RECIPE = "recipes/mobilevit_int8.yaml"
COMPARE_IMAGE_SIZE = 224
COMPARE_TEXT_LEN = 77  # AltCLIP's trained text length
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH = 4

# Real sizes (config.json of the hub checkpoints; tests/hf_fixtures.py REAL_CHECKPOINTS lists the same shapes).
ALTCLIP_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14, hidden_act="quick_gelu")
ALTCLIP_TEXT = dict(vocab_size=250002, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, project_dim=768)
ALTCLIP_PROJECTION = 768
CNCLIP_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     image_size=224, patch_size=16, hidden_act="quick_gelu")
CNCLIP_TEXT = dict(vocab_size=21128, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0)
CNCLIP_PROJECTION = 512
CNCLIP_TEXT_LEN = 52  # Chinese-CLIP's trained context length


@dataclass(frozen=True)
class RowSpec:
    """One row of the table: what to build. `size` is pixels (image) or tokens (text)."""

    model: str
    tower: str  # image | text
    precision: str  # fp32 | int8 | 8da4w
    size: int
    role: str  # teacher | peer | student
    embed_dim: int = 0  # students: the recipe's shared embedding width
    vocab_size: int = 0  # text students: the recipe's tokenizer size
    trained: bool = True  # the input size the model was trained at (students: their recipe's)

    @property
    def input(self) -> str:
        return f"{self.size}px" if self.tower == "image" else f"{self.size}tok"

    @property
    def name(self) -> str:
        return f"{self.model}/{self.tower}/{self.precision}/{self.input}"


# ------------------------------------------------------------------------------------------------ which rows
def teacher_specs() -> list[RowSpec]:
    return [
        RowSpec("altclip", "image", "fp32", 224, "teacher"),
        RowSpec("altclip", "text", "fp32", COMPARE_TEXT_LEN, "teacher"),
        RowSpec("chinese_clip", "image", "fp32", 224, "teacher"),
        RowSpec("chinese_clip", "text", "fp32", CNCLIP_TEXT_LEN, "teacher"),
    ]


def peer_specs() -> list[RowSpec]:
    return [
        RowSpec("fastvit_mci0", "image", "fp32", 256, "peer"),
        RowSpec("fastvit_mci0", "image", "fp32", 224, "peer", trained=False),
    ]


def student_specs(recipes: tuple[str, ...] = STUDENT_RECIPES) -> list[RowSpec]:
    """Every image/text tower the recipes name (first recipe wins for a tower two recipes share), each precision,
    at its trained size and at the comparison size (224 px / 77 tokens)."""
    from compress.recipe import load_recipe

    rows: list[RowSpec] = []
    seen: set[tuple[str, str]] = set()
    for path in recipes:
        r = load_recipe(path)
        towers = [
            ("image", r.students.image.arch, r.data.image_size, COMPARE_IMAGE_SIZE, 0),
            ("text", r.students.text.arch, r.students.text.context_length, COMPARE_TEXT_LEN, r.students.text.vocab_size),
        ]
        for tower, arch, trained, compare, vocab in towers:
            if (tower, arch) in seen:
                continue
            seen.add((tower, arch))
            sizes = [(trained, True)] + ([(compare, False)] if compare != trained else [])
            for precision in PRECISIONS:
                for size, is_trained in sizes:
                    rows.append(RowSpec(arch, tower, precision, size, "student", r.students.embed_dim, vocab, is_trained))
    return rows


def all_specs(quick: bool = False) -> list[RowSpec]:
    """Big models first, so the process's peak RSS after each of them is that model's own lowering peak."""
    return (peer_specs() + student_specs()) if quick else (teacher_specs() + peer_specs() + student_specs())


def select(specs: list[RowSpec], only: list[str] | None) -> list[RowSpec]:
    """`--only` globs on `model/tower/precision/input` (e.g. `mobilevit_xxs/*/int8/*`, `*/text/*`)."""
    if not only:
        return specs
    picked = [s for s in specs if any(fnmatch.fnmatch(s.name, pat) for pat in only)]
    if not picked:
        raise UserError(f"--only {' '.join(only)} matches no row; rows look like {specs[0].name}")
    return picked


# ------------------------------------------------------------------------------------------------ eager models
class HFImageTower(nn.Module):
    """`get_image_features` of a CLIP-family model, with only the vision tower and its projection inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.proj = model.visual_projection

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(self.vision(pixel_values=pixels).pooler_output)


class HFTextTower(nn.Module):
    """`get_text_features` of AltCLIP / Chinese-CLIP (CLS token -> projection); the mask comes from the ids, as in
    our text student, so both towers take one (1, L) int64 input."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.text = model.text_model
        self.proj = model.text_projection
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        return self.proj(self.text(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0, :])


def _hf_model(family: str, tower: str) -> nn.Module:
    from transformers import AltCLIPConfig, AltCLIPModel, ChineseCLIPConfig, ChineseCLIPModel

    if family == "altclip":
        cfg = AltCLIPConfig(text_config=ALTCLIP_TEXT, vision_config=ALTCLIP_VISION, projection_dim=ALTCLIP_PROJECTION)
        model = AltCLIPModel._from_config(cfg, attn_implementation="eager")
        pad = ALTCLIP_TEXT["pad_token_id"]
    else:
        cfg = ChineseCLIPConfig(text_config=CNCLIP_TEXT, vision_config=CNCLIP_VISION, projection_dim=CNCLIP_PROJECTION)
        model = ChineseCLIPModel._from_config(cfg, attn_implementation="eager")
        pad = CNCLIP_TEXT["pad_token_id"]
    return HFImageTower(model) if tower == "image" else HFTextTower(model, pad)


def _fastvit_mci0() -> nn.Module:
    """MobileCLIP-S0's image tower (timm's `apple_mclip` head: 512-d embedding), reparameterised for inference."""
    import timm
    from timm.utils.model import reparameterize_model

    return reparameterize_model(timm.create_model("fastvit_mci0", pretrained=False).eval())


def _student(spec: RowSpec) -> nn.Module:
    from students.registry import create_image_tower, create_text_tower

    if spec.tower == "image":
        return create_image_tower(spec.model, spec.embed_dim, spec.size)
    return create_text_tower(spec.model, spec.vocab_size, spec.embed_dim, spec.size)


def build_eager(spec: RowSpec) -> nn.Module:
    """The fp32 eager model of a row, in eval mode, with seeded random weights."""
    torch.manual_seed(0)
    if spec.model in ("altclip", "chinese_clip"):
        model = _hf_model(spec.model, spec.tower)
    elif spec.model == "fastvit_mci0":
        model = _fastvit_mci0()
    else:
        model = _student(spec)
    return model.eval()


def example_inputs(spec: RowSpec, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """[0, 1] pixels or token ids with no padding (every position does work; the graph is static either way)."""
    g = torch.Generator().manual_seed(seed)
    if spec.tower == "image":
        return (torch.rand(batch, 3, spec.size, spec.size, generator=g),)
    high = spec.vocab_size or 1000
    return (torch.randint(5, high, (batch, spec.size), generator=g),)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one batch-1 forward: FlopCounterMode's FLOPs / 2."""
    from torch.utils.flop_counter import FlopCounterMode

    from mobile_export.lower.capture import explicit_attention

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), explicit_attention(module), counter:
        module(*(x[:1] for x in inputs))
    return counter.get_total_flops() // 2


# ------------------------------------------------------------------------------------------------ quantization
# Random calibration batches each precision's project scheme observes before convert (observers only; no training):
# the static int8 graph needs activation ranges, 8da4w's activations are dynamic.
CALIBRATED = {"int8": CALIBRATION_BATCHES, "8da4w": 0}
QUANT_CODE = ("compress/quant/schemes.py", "compress/quant/pt2e.py", "mobile_export/lower/capture.py",
              "mobile_export/lower/xnnpack.py")


def quantize(module: nn.Module, spec: RowSpec) -> nn.Module:
    """The project's own scheme of the row's precision (`compress.quant.schemes`, the flow runs and `export` use):
    prepare, run `CALIBRATED[precision]` random batches through it, convert. int8: the PT2E XNNPACK graph
    (per-channel weights); 8da4w: torchao dynamic int8 activations, int4 group-32 linear weights."""
    if spec.precision == "fp32":
        return module
    from compress.quant.schemes import get_scheme, quantize_tower

    batches = CALIBRATED[spec.precision]
    example = example_inputs(spec, batch=CALIBRATION_BATCH) if batches else example_inputs(spec)
    calibration = [example_inputs(spec, batch=CALIBRATION_BATCH, seed=1 + i) for i in range(batches)]
    return quantize_tower(get_scheme(spec.precision), module, example, calibration)


@functools.cache  # fixed within a process; computed once, not per row or key
def _quant_fingerprint() -> str:
    """Content hash of the quantization and lowering code a quantized row is built through: a changed scheme,
    quantizer or XNNPACK lowering rebuilds those rows' cached programs."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for rel in QUANT_CODE:
        path = root / rel
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:8]


def quant_source(precision: str) -> str:
    return "none" if precision == "fp32" else "compress.quant.schemes"


# ------------------------------------------------------------------------------------------------ lower + cache
@functools.cache  # fixed within a process; computed once, not per row or key
def versions() -> dict[str, str]:
    import executorch.version
    import torchao

    return {"torch": torch.__version__, "torchao": torchao.__version__, "executorch": executorch.version.__version__}


def cache_paths(spec: RowSpec, cache_dir: Path) -> tuple[Path, Path]:
    """`.pte` and sidecar paths, keyed by everything that changes the lowered program."""
    source = quant_source(spec.precision)
    build = f"{BUILD_VERSIONS[spec.precision]}-{source}"
    if source != "none":
        build += f"-{_quant_fingerprint()}"
    key = json.dumps({**asdict(spec), "build": build, **versions()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = f"{spec.model}-{spec.tower}-{spec.precision}-{spec.input}-et{versions()['executorch']}-{digest}"
    return cache_dir / f"{stem}.pte", cache_dir / f"{stem}.json"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def build_pte(spec: RowSpec, cache_dir: Path = CACHE_DIR) -> tuple[Path, dict[str, Any]]:
    """Lower the row's model to a cached `.pte` (or reuse it); returns the path and its sidecar facts."""
    from mobile_export.lower.capture import save_pte
    from mobile_export.lower.targets import get_target

    pte, sidecar = cache_paths(spec, Path(cache_dir))
    if pte.is_file() and sidecar.is_file():
        return pte, {**json.loads(sidecar.read_text(encoding="utf-8")), "cached": True}
    start = time.perf_counter()
    model = build_eager(spec)
    inputs = example_inputs(spec)
    facts: dict[str, Any] = {"params": count_params(model), "macs": count_macs(model, inputs)}
    source = quant_source(spec.precision)
    program = get_target("xnnpack").lower(quantize(model, spec), inputs)
    facts.update(
        lower_s=round(time.perf_counter() - start, 1),
        peak_rss_mb_after_lowering=round(_peak_rss_mb()),
        non_delegated_ops=program.delegation["non_delegated_ops"],
        quant=source,
        versions=versions(),
    )
    save_pte(program, pte)
    write_json(sidecar, facts)
    del model, program
    gc.collect()
    return pte, {**facts, "cached": False}


# ------------------------------------------------------------------------------------------------ timing
def set_threads(threads: int) -> int:
    """One thread count for eager work and for ExecuTorch's threadpool (which XNNPACK runs on)."""
    from mobile_export.runtime import set_threadpool, threadpool_size

    torch.set_num_threads(threads)
    set_threadpool(threads)
    return threadpool_size()


def time_pte(path: Path, inputs: tuple[torch.Tensor, ...], target_s: float, min_runs: int, max_runs: int,
             warmup: int) -> dict[str, Any]:
    """`host_latency` with as many runs as fit in about `target_s` (one probe run sizes it), clamped."""
    from mobile_export.timing import host_latency

    probe = host_latency(path, inputs, runs=1, warmup=1)["median_inference_latency(ms)"]
    runs = max(min_runs, min(max_runs, int(target_s * 1e3 / max(probe, 1e-3))))
    return host_latency(path, inputs, runs=runs, warmup=warmup)


def build_row(spec: RowSpec, cache_dir: Path = CACHE_DIR, target_s: float = 6.0, min_runs: int = 5,
              max_runs: int = 50, warmup: int = 2) -> dict[str, Any]:
    """Lower (or reuse) and time one row; the eight schema keys first, then the row's build facts."""
    pte, facts = build_pte(spec, cache_dir)
    stats = time_pte(pte, example_inputs(spec), target_s, min_runs, max_runs, warmup)
    return {
        "model": spec.model,
        "tower": spec.tower,
        "precision": spec.precision,
        "input": spec.input,
        "median_ms": round(stats["median_inference_latency(ms)"], 3),
        "pte_mb": round(pte.stat().st_size / 1e6, 3),
        "params": facts["params"],
        "macs": facts["macs"],
        "role": spec.role,
        "trained_input": spec.trained,
        "runs": stats["runs"],
        "trimmean_ms": round(stats["trimmean_inference_latency(ms)"], 3),
        "load_ms": round(stats["model_load_time(ms)"], 1),
        "non_delegated_ops": facts["non_delegated_ops"],
        "quant": facts.get("quant", "none"),
        "lower_s": facts["lower_s"],
        "peak_rss_mb_after_lowering": facts["peak_rss_mb_after_lowering"],
        "cached": facts["cached"],
    }


# ------------------------------------------------------------------------------------------------ ratios
def _find(rows: list[dict], **want: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)


def _ratio(slow: dict | None, fast: dict | None, threshold: float, strict: bool = False) -> dict[str, Any] | None:
    """`slow.median / fast.median`; passes at >= threshold (or > threshold when strict)."""
    if slow is None or fast is None:
        return None
    value = slow["median_ms"] / fast["median_ms"]
    ok = value > threshold if strict else value >= threshold
    rel = ">" if strict else ">="
    name = lambda r: f"{r['model']}/{r['tower']}/{r['precision']}/{r['input']}"  # noqa: E731
    return {"value": round(value, 2), "target": f"{rel} {threshold:g}", "pass": ok, "slow": name(slow), "fast": name(fast)}


def headline_students() -> tuple[str, str]:
    from compress.recipe import load_recipe

    r = load_recipe(HEADLINE_RECIPE)
    return r.students.image.arch, r.students.text.arch


def acceptance_ratios(rows: list[dict]) -> dict[str, Any]:
    """Issue 8's four latency ratios, from rows of this run (None where a row was not built, e.g. with --only)."""
    image, text = headline_students()
    px, tok = f"{COMPARE_IMAGE_SIZE}px", f"{COMPARE_TEXT_LEN}tok"
    student_img = _find(rows, model=image, tower="image", precision="int8", input=px)
    return {
        "int8_image_student_224_vs_altclip_image": _ratio(
            _find(rows, model="altclip", tower="image"), student_img, 30),
        "int8_text_student_vs_xlmr_large": _ratio(
            _find(rows, model="altclip", tower="text"), _find(rows, model=text, tower="text", precision="int8",
                                                              input=tok), 30),
        "int8_vs_fp32_image_student_224": _ratio(
            _find(rows, model=image, tower="image", precision="fp32", input=px), student_img, 1.5),
        "best_int8_image_student_vs_fastvit_mci0_fp32_224": _ratio(
            _find(rows, model="fastvit_mci0", input=px), _best_int8_image(rows, px), 1.0, strict=True),
    }


def _best_int8_image(rows: list[dict], px: str) -> dict | None:
    int8 = [r for r in rows if r["role"] == "student" and r["tower"] == "image" and r["precision"] == "int8"
            and r["input"] == px]
    return min(int8, key=lambda r: r["median_ms"]) if int8 else None


def context_ratios(rows: list[dict]) -> dict[str, Any]:
    """Not acceptance items: the same comparisons at the student's trained size and the peer's native 256 px."""
    image, _ = headline_students()
    trained = next((r["input"] for r in rows if r["model"] == image and r["tower"] == "image" and r["trained_input"]),
                   None)
    plain = lambda ratio: ratio and {k: v for k, v in ratio.items() if k not in ("target", "pass")}  # noqa: E731
    return {
        "int8_vs_fp32_image_student_trained_size": plain(_ratio(
            _find(rows, model=image, tower="image", precision="fp32", input=trained),
            _find(rows, model=image, tower="image", precision="int8", input=trained), 1.0)),
        "8da4w_vs_fp32_image_student_224": plain(_ratio(
            _find(rows, model=image, tower="image", precision="fp32", input=f"{COMPARE_IMAGE_SIZE}px"),
            _find(rows, model=image, tower="image", precision="8da4w", input=f"{COMPARE_IMAGE_SIZE}px"), 1.0)),
        "best_int8_image_student_224_vs_fastvit_mci0_fp32_256": plain(_ratio(
            _find(rows, model="fastvit_mci0", input="256px"), _best_int8_image(rows, f"{COMPARE_IMAGE_SIZE}px"), 1.0)),
    }


# ------------------------------------------------------------------------------------------------ markdown
def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _fmt_macs(n: int) -> str:
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def markdown(result: dict[str, Any]) -> str:
    """The table plus the ratios and the conditions they were measured under."""
    meta = result["meta"]
    lines = [
        "| model | tower | precision | input | median ms | .pte MB | params | MACs |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        model = r["model"] if r["role"] == "student" else f"{r['model']} ({r['role']})"
        lines.append(
            f"| {model} | {r['tower']} | {r['precision']} | {r['input']}{'' if r['trained_input'] else '*'} "
            f"| {r['median_ms']:.2f} | {r['pte_mb']:.2f} | {_fmt_params(r['params'])} | {_fmt_macs(r['macs'])} |"
        )
    lines += ["", "`*` not the size the model was trained at (comparison size).", ""]
    lines.append("Acceptance ratios (issue 8), from this run:")
    for name, ratio in result["ratios"].items():
        if ratio is None:
            lines.append(f"- {name}: not measured in this run")
        else:
            verdict = "pass" if ratio["pass"] else "FAIL"
            lines.append(f"- {name}: **{ratio['value']}x** (target {ratio['target']}: {verdict}; "
                         f"`{ratio['slow']}` / `{ratio['fast']}`)")
    lines += ["", "Context (no target):"]
    for name, ratio in result.get("context_ratios", {}).items():
        lines.append(f"- {name}: " + (f"{ratio['value']}x (`{ratio['slow']}` / `{ratio['fast']}`)" if ratio
                                      else "not measured in this run"))
    lines += [
        "",
        f"ExecuTorch {meta['versions']['executorch']} XNNPACK, {meta['threads']} thread(s), batch 1, "
        f"{meta['host']}; load average {meta['loadavg_before'][0]:.2f} before, {meta['loadavg_after'][0]:.2f} after "
        f"(a shared host: trust the ratios, measured side by side, over absolute ms). "
        f"MACs: torch FlopCounterMode FLOPs / 2 on the eager fp32 model. `{meta['command']}`",
    ]
    return "\n".join(lines)


def write_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise UserError(f"{readme} has no {README_START} ... {README_END} markers; add them where the table goes")
    head, rest = text.split(README_START, 1)
    write_text(readme, head + README_START + "\n" + table + "\n" + README_END + rest.split(README_END, 1)[1])


# ------------------------------------------------------------------------------------------------ main
def run_table(specs: list[RowSpec], threads: int, cache_dir: Path, timing: dict[str, Any], command: str) -> dict:
    from compress.progress import progress_bar

    load_before = os.getloadavg()
    actual = set_threads(threads)
    rows: list[dict] = []
    start = time.perf_counter()
    with progress_bar("latency table", total=len(specs)) as advance:
        for spec in specs:
            row = build_row(spec, cache_dir, **timing)
            rows.append(row)
            advance(f"{spec.name}: {row['median_ms']:.2f} ms")
    return {
        "rows": rows,
        "ratios": acceptance_ratios(rows),
        "context_ratios": context_ratios(rows),
        "meta": {
            "threads": actual,
            "host": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - start, 1),
            "timing": timing,
            "macs": "torch.utils.flop_counter.FlopCounterMode FLOPs / 2, eager fp32 model, batch 1",
            "versions": versions(),
            "command": command,
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1,
                    help="ExecuTorch/XNNPACK and torch threads for every row (default 1: a shared 2-core host's other "
                         "load then slows every row alike)")
    ap.add_argument("--quick", action="store_true", help="peer and student rows only (no teachers), fewer runs")
    ap.add_argument("--only", nargs="+", metavar="GLOB", help="rows whose model/tower/precision/input match a glob")
    ap.add_argument("--target-s", type=float, default=6.0, help="timed seconds per row (runs = target / probe run)")
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    ap.add_argument("--readme", action="store_true", help="write the table into docs/latency.md between the latency markers")
    args = ap.parse_args(argv)
    try:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        specs = select(all_specs(args.quick), args.only)
        timing = dict(target_s=args.target_s, min_runs=5, max_runs=50, warmup=2)
        if args.quick:
            timing = dict(target_s=min(args.target_s, 2.0), min_runs=3, max_runs=20, warmup=1)
        command = "python -m bench.latency_table " + " ".join(argv if argv is not None else sys.argv[1:])
        result = run_table(specs, args.threads, args.cache_dir, timing, command.strip())
        table = markdown(result)
        write_json(args.out, result)
        write_text(args.out.with_suffix(".md"), table + "\n")
        if args.readme:
            write_readme(table)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(table)


if __name__ == "__main__":
    main()
