"""The app-ready export bundle: everything a phone app needs beside the `.pte` files, written by one function for
every target (`write_export_bundle`).

One folder, one file per tower and precision (`image_<quant>.pte`, `text_<quant>.pte`): an app that only classifies
photos against fixed labels ships the image tower and the label embeddings, without the text tower. Beside them:

- `tokenizer.json` (Hugging Face tokenizers format) and `preprocess.json` (how to turn a photo or a caption into the
  exported input tensors);
- `bundle.json`: the metadata the Android helper reads (kept with its original keys);
- for a target whose programs the host runtime can run (XNNPACK): `labels.json` + `label_embeddings_<quant>.f32`
  (L2-normalised text embeddings of a label set in en and zh, raw little-endian float32 of shape (2, N, D), computed
  through that precision's text `.pte`), `<tower>_<quant>.bpte` (an ExecuTorch BundledProgram: the program plus
  sample inputs and the host runtime's outputs for them, for on-device validation) and `parity/` (the Android
  helper's fixtures);
- `manifest.json`, written last: versions, the input/output shapes and dtypes of every program, and the size and
  sha256 of every other file. Every `.pte` load checks a file against it (`mobile_export.pte_check`); `verify`
  (mobile_export.bundle.verify) checks the whole bundle.

The model is a duck: `.image`, `.text`, `.spec`, `.logit_scale` and `.tower_params()`.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from compress.atomic import atomic_path, sha256_file, write_json
from compress.prompts import EMOJI_TEMPLATES, LANGS, Templates
from mobile_export.bundle.labels import Label, embed_labels, emoji_labels, label_prompts
from mobile_export.lower.targets import get_target
from mobile_export.pte_check import MANIFEST, check_pte

BUNDLE_FORMAT = "dcclip-compress-bundle/1"
SAMPLES_PER_TOWER = 2
# Bundled samples are checked against the host runtime's outputs. A phone runs other XNNPACK kernels (ARM vs x86
# micro-kernels, other accumulation order), so the tolerance is relative to the output's scale, as loose as an int8
# rounding step of a typical activation and far tighter than what a wrong program or wrong input produces.
SAMPLE_RTOL = 1e-2
SAMPLE_ATOL_FRACTION = 1e-2  # atol = this x max |expected output|


# --------------------------------------------------------------------------------------------------- metadata
def pte_metadata(model, tokenizer) -> dict:
    """What the phone needs besides the weights; embedded in each .pte and repeated in bundle.json."""
    s = model.spec
    return {
        "embed_dim": s.embed_dim, "image_size": s.image_size, "context_length": s.context_length,
        "pad_id": tokenizer.pad_id, "logit_scale": float(model.logit_scale.detach().exp()),
    }


def first_templates(templates: Templates) -> dict[str, str]:
    """`prompt_templates` (one per language, the first): what apps written for one template read."""
    return {lang: ts[0] for lang, ts in templates.items()}


def write_bundle(folder: Path, model, tokenizer, target: str, files: dict[str, dict[str, str]],
                 templates: Templates | None = None, extra: dict[str, Any] | None = None) -> Path:
    """export folder = .pte files + tokenizer.json + bundle.json (input layout, metadata, prompts, file names; `extra`:
    what a target adds, e.g. where its programs run)."""
    templates = templates or EMOJI_TEMPLATES
    tokenizer.save(folder / "tokenizer.json")
    write_json(folder / "bundle.json", {
        **pte_metadata(model, tokenizer), "params": model.tower_params(), "target": target,
        "input": "image: float32 RGB in [0,1], NCHW (1,3,H,W); normalisation is inside the model",
        "text_input": "int64 token ids (1, context_length), tokenizer.json, padded with pad_id",
        "prompt_templates": first_templates(templates), "templates": templates, "files": files, **(extra or {}),
    })
    return folder / "bundle.json"


# --------------------------------------------------------------------------------------------------- preprocess
def preprocess_spec(model, tokenizer, templates: Templates | None = None) -> dict[str, Any]:
    """How an app turns a photo / a caption into the exported inputs, as the training and eval pipelines do.

    Pixel normalisation (mean/std) is inside the image `.pte`: the app feeds [0, 1] RGB and must not normalise again.
    Eval renders are square and resized with antialiased bilinear (`compress.data.augment.resize_uint8`); a camera
    frame is centre-cropped to a square first so objects keep their aspect ratio.
    """
    s = model.spec
    image = model.image
    mean = [round(float(v), 6) for v in getattr(image, "mean", torch.zeros(3)).flatten()]
    std = [round(float(v), 6) for v in getattr(image, "std", torch.ones(3)).flatten()]
    return {
        "image": {
            "shape": [1, 3, s.image_size, s.image_size], "dtype": "float32", "layout": "NCHW",
            "channel_order": "RGB", "value_range": [0.0, 1.0], "scale": "uint8 pixel / 255",
            "crop": {"mode": "center", "aspect": 1.0, "note": "centre square of the shorter side; renders are square"},
            "resize": {"size": [s.image_size, s.image_size], "filter": "bilinear", "antialias": True},
            "alpha": "composite over white (training backgrounds are light: 190..255 per channel)",
            "normalization": {"inside_model": True, "mean": mean, "std": std,
                              "note": "applied by the image .pte; feed [0, 1] RGB, do not normalise in the app"},
        },
        "text": {
            "tokenizer": "tokenizer.json", "shape": [1, s.context_length], "dtype": "int64",
            "context_length": s.context_length, "pad_id": tokenizer.pad_id,
            "padding": "right, with pad_id, to context_length; longer texts are truncated",
            "normalizer": "BERT: lower-case, strip accents, Chinese split into single characters",
            "prompt_templates": first_templates(templates or EMOJI_TEMPLATES), "templates": templates or EMOJI_TEMPLATES,
            "templates_note": "a label's embedding: the L2-normalised mean of its L2-normalised template embeddings",
        },
        "embedding": {"dim": s.embed_dim, "l2_normalize": True,
                      "note": "both .pte outputs are unnormalised; L2-normalise, then cosine = dot product",
                      "logit_scale": float(model.logit_scale.detach().exp())},
    }


# ------------------------------------------------------------------------------------------------ programs
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
                torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}


def sample_inputs(tower: str, model, tokenizer, labels: Sequence[Label],
                  templates: Templates | None = None) -> list[tuple[torch.Tensor, ...]]:
    """Deterministic samples per tower: seeded [0, 1] images; real label prompts (en and zh) for text."""
    if tower == "image":
        g = torch.Generator().manual_seed(0)
        size = model.spec.image_size
        return [(torch.rand(1, 3, size, size, generator=g),) for _ in range(SAMPLES_PER_TOWER)]
    prompts = [label_prompts(labels[:1], lang, templates)[0] for lang in LANGS][:SAMPLES_PER_TOWER]
    return [(tokenizer([p]),) for p in prompts]


def write_bundled_program(pte: Path, method: str, samples: list[tuple[torch.Tensor, ...]], out: Path) -> dict:
    """`<tower>_<quant>.bpte`: the program plus samples and the host runtime's outputs for them."""
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    from mobile_export.runtime import PteModule

    module = PteModule(pte, method)
    cases, scale = [], 0.0
    for inputs in samples:
        expected = module.run_once(*inputs)
        scale = max(scale, float(expected.abs().max()))
        cases.append(MethodTestCase(inputs=list(inputs), expected_outputs=[expected]))
    bundled = BundledProgram(None, [MethodTestSuite(method, cases)], pte_file_path=str(pte))
    with atomic_path(out, suffix=".bpte") as tmp:
        tmp.write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))
    return {"file": out.name, "samples": len(cases), "rtol": SAMPLE_RTOL,
            "atol": SAMPLE_ATOL_FRACTION * max(scale, 1e-6)}


def program_info(pte: Path, method: str = "forward") -> dict[str, Any]:
    """Input and output shapes/dtypes from the method's own metadata (what the runtime will enforce)."""
    from mobile_export.runtime import _SCALAR_TYPES, PteModule

    meta = PteModule(pte, method).method.metadata

    def spec(info) -> dict[str, Any]:
        dtype = _SCALAR_TYPES.get(info.dtype())
        return {"shape": list(info.sizes()), "dtype": _DTYPE_NAMES.get(dtype, str(info.dtype()))}

    return {"method": method, "inputs": [spec(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            "outputs": [spec(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]}


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("dcclip-compress", "executorch", "torch", "torchao", "tokenizers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under the bundle (sub-folders too, posix paths) except the manifest and hidden temp files."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or any(part.startswith(".") for part in Path(rel).parts):
            continue
        out[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def write_export_bundle(
    folder: Path, model, tokenizer, target: str, files: dict[str, dict[str, str]],
    labels: Sequence[Label] | None = None, label_source: str = "emoji",
    estimates: dict[str, dict[str, Any]] | None = None, templates: Templates | None = None,
) -> Iterator[str]:
    """Complete an export folder that already holds the `.pte` files (`files`: quant -> tower -> file name) into a
    bundle; yields one line per artefact. What goes in depends on whether the host runtime can run the target's
    programs: samples, label embeddings and parity fixtures need it; an NPU bundle carries `estimates` (tower -> the
    compiler's estimate) in its manifest instead."""
    folder = Path(folder)
    templates = templates or EMOJI_TEMPLATES
    if not get_target(target).runs_on_host:
        yield from _write_npu_bundle(folder, model, tokenizer, target, files, estimates or {}, labels, label_source,
                                     templates)
        return
    from mobile_export.bundle.parity import write_parity
    from mobile_export.runtime import PteModule

    (folder / MANIFEST).unlink(missing_ok=True)  # stale hashes of a previous bundle must not vet the new files
    for name in (n for towers in files.values() for n in towers.values()):
        check_pte(folder / name)
    write_bundle(folder, model, tokenizer, target, files, templates)
    write_json(folder / "preprocess.json", preprocess_spec(model, tokenizer, templates))
    yield f"preprocess: {folder / 'preprocess.json'}"

    labels = list(labels) if labels is not None else emoji_labels()
    label_doc: dict[str, Any] = {
        "source": label_source, "count": len(labels), "languages": list(LANGS),
        "prompt_templates": first_templates(templates), "templates": templates,
        "labels": [label.as_dict() for label in labels], "embeddings": {},
    }
    programs: dict[str, dict[str, Any]] = {}
    for quant, towers in files.items():
        for tower, name in towers.items():
            pte = folder / name
            info = {"tower": tower, "quant": quant, **program_info(pte)}
            samples = sample_inputs(tower, model, tokenizer, labels, templates)
            info["bundled_program"] = write_bundled_program(pte, "forward", samples, folder / f"{pte.stem}.bpte")
            programs[name] = info
            yield f"{tower} {quant}: {folder / info['bundled_program']['file']} ({len(samples)} samples)"
        if "text" in towers:
            text = PteModule(folder / towers["text"])
            emb = embed_labels(lambda prompts: text(tokenizer(prompts)), labels,
                               description=f"label embeddings ({quant} text .pte)", templates=templates)
            file = f"label_embeddings_{quant}.f32"
            with atomic_path(folder / file, suffix=".f32") as tmp:
                tmp.write_bytes(emb.tobytes())
            label_doc["embeddings"][quant] = {
                "file": file, "dtype": "float32", "byte_order": "little", "shape": list(emb.shape),
                "axes": ["language (en, zh)", "label", "dim"], "l2_normalized": True, "computed_with": towers["text"],
            }
            yield f"labels {quant}: {folder / file} ({len(labels)} labels x {len(LANGS)} languages, via {towers['text']})"
    write_json(folder / "labels.json", label_doc)

    # -- the Android helper's parity fixtures go here, before the manifest so it hashes them too --------------------
    write_parity(folder)

    yield f"manifest: {write_manifest(folder, target, list(files), model_info(model), programs)}"


def _write_npu_bundle(folder: Path, model, tokenizer, target: str, files: dict[str, dict[str, str]],
                      estimates: dict[str, dict[str, Any]], labels: Sequence[Label] | None = None,
                      label_source: str = "emoji", templates: Templates | None = None) -> Iterator[str]:
    """The bundle of a target whose programs this host cannot run (an NPU, Core ML): bundle.json (plus what the
    programs compute in, when the backend decides it), tokenizer.json, preprocess.json, labels.json, parity/ and the
    manifest.

    No BundledProgram and no label embeddings: both need the programs run. labels.json holds the label names and
    templates, and the app embeds them on the device with the text program. parity/ holds what an app checks its own
    code against: the preprocessed tensors and token ids (exact), and reference embeddings and top-5 computed with
    the eager fp32 towers, not with the programs (on the device they agree within the program's precision, not
    bit for bit). manifest.json hashes every file, so `verify` and the loaders still catch a damaged copy."""
    from mobile_export.bundle.parity import build_parity

    t = get_target(target)
    templates = templates or EMOJI_TEMPLATES
    (folder / MANIFEST).unlink(missing_ok=True)  # stale hashes of a previous bundle must not vet the new files
    precision = {quant: t.precision(quant) for quant in files if t.precision(quant)}
    extra = {"runs_on": t.runtime or target, **({"precision": precision} if precision else {})} \
        if precision or t.runtime else None
    write_bundle(folder, model, tokenizer, target, files, templates, extra)
    write_json(folder / "preprocess.json", preprocess_spec(model, tokenizer, templates))
    yield f"preprocess: {folder / 'preprocess.json'}"

    labels = list(labels) if labels is not None else emoji_labels()
    write_json(folder / "labels.json", {
        "source": label_source, "count": len(labels), "languages": list(LANGS),
        "prompt_templates": first_templates(templates), "templates": templates,
        "labels": [label.as_dict() for label in labels], "embeddings": {},
        "embeddings_note": (f"none shipped: {t.not_run_here()}, so the text program cannot embed them here; embed "
                            "the labels on the device with the text program (preprocess.json: text.templates_note)"),
    })
    yield f"labels: {folder / 'labels.json'} ({len(labels)} labels, names and templates; embedded on the device)"

    was_training = model.training
    model.eval()
    try:
        parity = build_parity(folder, model.image, model.text, quant="eager-fp32", computed_with=(
            f"the eager fp32 PyTorch towers ({t.not_run_here()}): preprocessed tensors and token ids are exact; "
            "embeddings and top-5 are references that the device's programs match within their precision")) / "parity.json"
    finally:
        model.train(was_training)
    yield f"parity: {parity.parent} (eager fp32 reference; {t.not_run_here()})"

    manifest = _write_npu_manifest(folder, model_info(model), target, files, estimates)
    yield (f"bundle: {folder / 'bundle.json'}, {manifest} (no BundledProgram or label embeddings: {t.not_run_here()}; "
           f"`verify` checks the programs' structure and hashes)")


def model_info(model) -> dict[str, Any]:
    """The manifest's `model`: the student's spec and its parameter count."""
    return {**vars(model.spec), "params": int(model.tower_params())}


def write_manifest(folder: Path, target: str, quant: list[str], model: dict[str, Any],
                   programs: dict[str, dict[str, Any]]) -> Path:
    """manifest.json, written last: format, versions, target, model, programs and every other file's size and sha256."""
    path = folder / MANIFEST
    write_json(path, {"format": BUNDLE_FORMAT, "versions": _versions(), "target": target, "quant": quant,
                      "model": model, "programs": programs, "files": _files(folder)})
    return path


def write_npu_manifest(folder: Path, model: dict[str, Any], target: str, files: dict[str, str],
                       estimates: dict[str, dict[str, Any]]) -> Path:
    """manifest.json of an int8 NPU export (`files`: tower -> .pte name): versions, shapes and every file's sha256, as
    for a host bundle, so `verify` and the `.pte` loaders catch a truncated or altered copy. No BundledProgram: an
    NPU program runs only on the NPU, so `verify` checks its structure and hashes but not its samples."""
    return _write_npu_manifest(Path(folder), model, target, {"int8": files}, estimates)


def _write_npu_manifest(folder: Path, model: dict[str, Any], target: str, files: dict[str, dict[str, str]],
                        estimates: dict[str, dict[str, Any]]) -> Path:
    (folder / MANIFEST).unlink(missing_ok=True)
    t = get_target(target)
    programs = {}
    for quant, towers in files.items():
        for tower, name in towers.items():
            check_pte(folder / name)
            est = estimates.get(tower)
            programs[name] = {"tower": tower, "quant": quant, "runs_on": t.runtime or target, "bundled_program": None}
            if t.precision(quant):
                programs[name]["precision"] = t.precision(quant)
            if est:
                programs[name]["vela_estimate"] = {k: est.get(k)
                                                   for k in ("accelerator", "cycles", "inference_time_ms")}
    return write_manifest(folder, target, list(files), model, programs)
