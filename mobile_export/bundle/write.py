"""The app-ready export bundle: everything a phone app needs beside the `.pte` files, and `verify` for it.

One folder, one file per tower and precision (`image_<quant>.pte`, `text_<quant>.pte`): an app that only classifies
photos against fixed labels ships the image tower and the label embeddings, without the text tower. Beside them:

- `tokenizer.json` (Hugging Face tokenizers format) and `preprocess.json` (how to turn a photo or a caption into the
  exported input tensors);
- `labels.json` + `label_embeddings_<quant>.f32`: L2-normalised text embeddings of a label set in en and zh, raw
  little-endian float32 of shape (2, N, D) (language, label, dim), computed through that precision's text `.pte`;
- `<tower>_<quant>.bpte`: an ExecuTorch BundledProgram (the program plus sample inputs and the host runtime's
  outputs for them), for on-device validation with ExecuTorch's bundled-program runner;
- `bundle.json`: the metadata the Android helper reads (kept with its original keys);
- `manifest.json`, written last: versions, the input/output shapes and dtypes of every program, and the size and
  sha256 of every other file. Every `.pte` load checks a file against it (`mobile_export.pte_check`).
"""
from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from compress.atomic import atomic_path, write_json
from compress.errors import UserError
from compress.prompts import EVAL_TEMPLATE, LANGS
from mobile_export.pte_check import MANIFEST, check_bundled_program, check_pte, sha256_file

BUNDLE_FORMAT = "dcclip-compress-bundle/1"
SAMPLES_PER_TOWER = 2
# Bundled samples are checked against the host runtime's outputs. A phone runs other XNNPACK kernels (ARM vs x86
# micro-kernels, other accumulation order), so the tolerance is relative to the output's scale, as loose as an int8
# rounding step of a typical activation and far tighter than what a wrong program or wrong input produces.
SAMPLE_RTOL = 1e-2
SAMPLE_ATOL_FRACTION = 1e-2  # atol = this x max |expected output|
LABEL_CHECK_ROWS = 4  # labels per language that `verify` re-embeds through the text .pte
LABEL_COSINE_MIN = 0.999


# --------------------------------------------------------------------------------------------------- label sets
@dataclass(frozen=True)
class Label:
    en: str
    zh: str
    id: str | None = None
    emoji: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("emoji", self.emoji), ("en", self.en), ("zh", self.zh)) if v is not None}


def emoji_labels() -> list[Label]:
    """The default label set: every emoji-zh-en class (what the students are trained and evaluated on)."""
    from compress.data.emoji import emoji_classes

    return [Label(c.en, c.zh, id=str(c.index), emoji=c.emoji) for c in emoji_classes()]


LABELS_HELP = ("a .jsonl file with one {\"en\": ..., \"zh\": ...} object per line (optional \"id\"), or a .tsv file "
               "whose first line names the columns en and zh (optional id)")


def _check_rows(rows: list[tuple[int, dict]], path: Path) -> list[Label]:
    labels: list[Label] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        values = {}
        for lang in LANGS:
            value = row.get(lang)
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"labels: {str(path)}:{line} has no {lang} name; every label needs both en and zh "
                                f"({LABELS_HELP})")
            values[lang] = " ".join(value.split())
        for lang in LANGS:
            key = (lang, values[lang].lower())
            if key in seen:
                raise UserError(f"labels: {str(path)}:{line} repeats the {lang} name {values[lang]!r} of line "
                                f"{seen[key]}; two labels with one name cannot be told apart")
            seen[key] = line
        ident = row.get("id")
        labels.append(Label(values["en"], values["zh"], id=None if ident in (None, "") else str(ident)))
    if not labels:
        raise UserError(f"labels: {str(path)!r} holds no labels; expected {LABELS_HELP}")
    return labels


def read_labels(path: str | Path) -> list[Label]:
    """A user's label list (`export --labels FILE`): JSONL or TSV with en and zh columns; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels: {str(path)!r} not found; pass {LABELS_HELP}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"labels: {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"labels: {str(path)}:{number} is not JSON ({e.msg}); expected {LABELS_HELP}") from None
            if not isinstance(row, dict):
                raise UserError(f"labels: {str(path)}:{number} is not a JSON object; expected {LABELS_HELP}")
            rows.append((number, row))
    elif suffix in (".tsv", ".tab"):
        lines = [(n, l) for n, l in enumerate(text.splitlines(), 1) if l.strip()]
        if not lines:
            raise UserError(f"labels: {str(path)!r} is empty; expected {LABELS_HELP}")
        header = [h.strip().lower() for h in lines[0][1].split("\t")]
        missing = [lang for lang in LANGS if lang not in header]
        if missing:
            raise UserError(f"labels: {str(path)}:{lines[0][0]} (the header) names no {' or '.join(missing)} column; "
                            f"it has: {', '.join(header)}; expected {LABELS_HELP}")
        for number, line in lines[1:]:
            cells = next(csv.reader([line], delimiter="\t"))
            if len(cells) != len(header):
                raise UserError(f"labels: {str(path)}:{number} has {len(cells)} tab-separated cells, the header "
                                f"{len(header)}")
            rows.append((number, dict(zip(header, cells))))
    else:
        raise UserError(f"labels: {str(path)!r} has an unknown extension {suffix or '(none)'!r}; pass {LABELS_HELP}")
    return _check_rows(rows, path)


def label_prompts(labels: Sequence[Label], lang: str) -> list[str]:
    """Label names in the zero-shot prompt the students were evaluated with ("an emoji of {}", "{}的表情符号")."""
    return [EVAL_TEMPLATE[lang].format(getattr(label, lang)) for label in labels]


def embed_labels(encode: Callable[[list[str]], torch.Tensor], labels: Sequence[Label], batch: int = 256,
                 description: str = "label embeddings") -> np.ndarray:
    """(2, N, D) float32, L2-normalised rows, language order `LANGS` (en, zh)."""
    from compress.progress import progress_bar

    chunks = [(lang, i) for lang in LANGS for i in range(0, len(labels), batch)]
    out: dict[str, list[torch.Tensor]] = {lang: [] for lang in LANGS}
    with progress_bar(description, len(chunks)) as advance, torch.no_grad():
        for lang, i in chunks:
            out[lang].append(encode(label_prompts(labels[i : i + batch], lang)).float())
            advance(lang)
    stacked = torch.stack([torch.cat(out[lang]) for lang in LANGS])
    return torch.nn.functional.normalize(stacked, dim=-1).numpy().astype("<f4")


# --------------------------------------------------------------------------------------------------- preprocess
def preprocess_spec(model, tokenizer) -> dict[str, Any]:
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
            "prompt_templates": EVAL_TEMPLATE,
        },
        "embedding": {"dim": s.embed_dim, "l2_normalize": True,
                      "note": "both .pte outputs are unnormalised; L2-normalise, then cosine = dot product",
                      "logit_scale": float(model.logit_scale.detach().exp())},
    }


# ------------------------------------------------------------------------------------------------ programs
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
                torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}


def _tensor_spec(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(t.shape), "dtype": _DTYPE_NAMES.get(t.dtype, str(t.dtype))}


def sample_inputs(tower: str, model, tokenizer, labels: Sequence[Label]) -> list[tuple[torch.Tensor, ...]]:
    """Deterministic samples per tower: seeded [0, 1] images; real label prompts (en and zh) for text."""
    if tower == "image":
        g = torch.Generator().manual_seed(0)
        size = model.spec.image_size
        return [(torch.rand(1, 3, size, size, generator=g),) for _ in range(SAMPLES_PER_TOWER)]
    prompts = [label_prompts(labels[:1], lang)[0] for lang in LANGS][:SAMPLES_PER_TOWER]
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


def _write_parity(folder: Path) -> None:
    """The Android helper's parity fixtures (`parity/`), when that module is installed in this checkout."""
    if importlib.util.find_spec("mobile_export.bundle.parity") is None:
        return
    from mobile_export.bundle.parity import write_parity

    write_parity(folder)


def write_export_bundle(
    folder: Path, model, tokenizer, target: str, files: dict[str, dict[str, str]],
    labels: Sequence[Label] | None = None, label_source: str = "emoji",
) -> Iterator[str]:
    """Complete an export folder that already holds the `.pte` files (`files`: quant -> tower -> file name) into a
    bundle; yields one line per artefact. `write_bundle` (compress.pipeline.stages) writes bundle.json + tokenizer.json."""
    from compress.pipeline.stages import write_bundle
    from mobile_export.runtime import PteModule

    folder = Path(folder)
    (folder / MANIFEST).unlink(missing_ok=True)  # stale hashes of a previous bundle must not vet the new files
    for name in (n for towers in files.values() for n in towers.values()):
        check_pte(folder / name)
    write_bundle(folder, model, tokenizer, target, files)
    write_json(folder / "preprocess.json", preprocess_spec(model, tokenizer))
    yield f"preprocess: {folder / 'preprocess.json'}"

    labels = list(labels) if labels is not None else emoji_labels()
    label_doc: dict[str, Any] = {
        "source": label_source, "count": len(labels), "languages": list(LANGS), "prompt_templates": EVAL_TEMPLATE,
        "labels": [label.as_dict() for label in labels], "embeddings": {},
    }
    programs: dict[str, dict[str, Any]] = {}
    for quant, towers in files.items():
        for tower, name in towers.items():
            pte = folder / name
            info = {"tower": tower, "quant": quant, **program_info(pte)}
            samples = sample_inputs(tower, model, tokenizer, labels)
            info["bundled_program"] = write_bundled_program(pte, "forward", samples, folder / f"{pte.stem}.bpte")
            programs[name] = info
            yield f"{tower} {quant}: {folder / info['bundled_program']['file']} ({len(samples)} samples)"
        if "text" in towers:
            text = PteModule(folder / towers["text"])
            emb = embed_labels(lambda prompts: text(tokenizer(prompts)), labels,
                               description=f"label embeddings ({quant} text .pte)")
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
    _write_parity(folder)

    yield f"manifest: {write_manifest(folder, target, list(files), model_info(model), programs)}"


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
    """manifest.json of an NPU export (`files`: tower -> .pte name): versions, shapes and every file's sha256, as
    for a host bundle, so `verify` and the `.pte` loaders catch a truncated or altered copy. No BundledProgram: an
    Ethos-U program runs only on the NPU, so `verify` checks its structure and hashes but not its samples."""
    folder = Path(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    programs = {}
    for tower, name in files.items():
        check_pte(folder / name)
        est = estimates.get(tower) or {}
        programs[name] = {"tower": tower, "quant": "int8", "runs_on": target, "bundled_program": None,
                          "vela_estimate": {k: est.get(k) for k in ("accelerator", "cycles", "inference_time_ms")}}
    return write_manifest(folder, target, ["int8"], model, programs)


def _is_npu(manifest: dict[str, Any]) -> bool:
    return str(manifest.get("target", "")).startswith("ethos-u")


# --------------------------------------------------------------------------------------------------- verify
def _load_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise UserError(f"verify: {str(folder)!r} is not a folder; pass the bundle folder written by "
                        "`dcclip-compress export`")
    path = folder / MANIFEST
    if not path.is_file():
        why = ("an export folder from before bundles; re-export it" if (folder / "bundle.json").is_file()
               else "it is not an export bundle")
        raise UserError(f"verify: {str(folder)!r} has no {MANIFEST} ({why}); verify a bundle written by "
                        "`dcclip-compress export --target xnnpack` or `dcclip-compress run`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"verify: {str(path)!r} is not valid JSON ({getattr(e, 'msg', e)}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"verify: {str(path)!r} is not a {BUNDLE_FORMAT} manifest; re-export the bundle")
    return manifest


def check_files(folder: Path, manifest: dict[str, Any]) -> int:
    """Every file the manifest lists is there with its size and sha256; returns how many."""
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise UserError(f"verify: {str(path)!r} is missing (listed in {MANIFEST}); re-export the bundle or copy it again")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise UserError(f"verify: {str(path)!r} is {size} bytes, {MANIFEST} says {entry.get('bytes')} (truncated "
                            "or altered); re-export the bundle or copy it again")
        if sha256_file(path) != entry.get("sha256"):
            raise UserError(f"verify: {str(path)!r} does not match its sha256 in {MANIFEST} (altered after export); "
                            "re-export the bundle or copy it again")
    required = ("bundle.json", "tokenizer.json", "preprocess.json") + (() if _is_npu(manifest) else ("labels.json",))
    for name in required:  # an NPU export has no label embeddings (its text program cannot run here)
        if name not in manifest["files"]:
            raise UserError(f"verify: {MANIFEST} of {str(folder)!r} lists no {name}; re-export the bundle")
    return len(manifest["files"])


def run_bundled_samples(folder: Path, name: str, info: dict[str, Any]) -> int:
    """Load `<name>.bpte` through ExecuTorch's bundled-program runtime and compare every sample's output with the
    expected one; the embedded program must be byte-identical to the `.pte` beside it."""
    from executorch.extension.pybindings import portable_lib

    from mobile_export.runtime import _runtime, runtime_stderr

    pte = folder / name
    check_pte(pte)
    bp = info["bundled_program"]
    bpte = folder / bp["file"]
    check_bundled_program(bpte)
    data = bpte.read_bytes()
    if pte.read_bytes() not in data:
        raise UserError(f"verify: {str(bpte)!r} does not hold {name} (the BundledProgram and the .pte differ); "
                        "re-export the bundle")
    _runtime()  # registers the quantized kernels
    method = info.get("method", "forward")
    with runtime_stderr() as log:
        try:
            module = portable_lib._load_bundled_program_from_buffer(data)
        except RuntimeError as e:
            raise UserError(f"verify: the runtime could not load {str(bpte)!r} ({log.last or e}); re-export the bundle") from None
    for i in range(int(bp["samples"])):
        with runtime_stderr() as log:
            try:
                module.verify_result_with_bundled_expected_output(method, i, float(bp["rtol"]), float(bp["atol"]))
            except RuntimeError as e:
                raise UserError(f"verify: {name} sample {i} does not reproduce its expected output within rtol "
                                f"{bp['rtol']:g}, atol {bp['atol']:.3g} ({log.last or e})") from None
    return int(bp["samples"])


def check_label_embeddings(folder: Path, manifest: dict[str, Any]) -> int:
    """Shape and norms of every label embedding file, and a few rows re-embedded through the text .pte."""
    from compress.tokenizer import BilingualTokenizer
    from mobile_export.runtime import PteModule

    doc = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    labels = [Label(r["en"], r["zh"]) for r in doc["labels"]]
    context = int(manifest["model"]["context_length"])
    tokenizer = BilingualTokenizer.load(folder / "tokenizer.json", context)
    checked = 0
    for quant, entry in doc["embeddings"].items():
        path = folder / entry["file"]
        shape = tuple(entry["shape"])
        if shape[:2] != (len(LANGS), len(labels)) or path.stat().st_size != 4 * math.prod(shape):
            raise UserError(f"verify: {str(path)!r} does not hold {len(LANGS)} x {len(labels)} embeddings of shape "
                            f"{list(shape)}; re-export the bundle")
        emb = np.fromfile(path, dtype="<f4").reshape(shape)
        norms = np.linalg.norm(emb, axis=-1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise UserError(f"verify: {str(path)!r} rows are not L2-normalised; re-export the bundle")
        text = PteModule(folder / entry["computed_with"])
        rows = labels[:LABEL_CHECK_ROWS]
        for li, lang in enumerate(LANGS):
            fresh = torch.nn.functional.normalize(text(tokenizer(label_prompts(rows, lang))).float(), dim=-1).numpy()
            cosine = (fresh * emb[li, : len(rows)]).sum(-1)
            if cosine.min() < LABEL_COSINE_MIN:
                raise UserError(f"verify: {str(path)!r} {lang} rows differ from {entry['computed_with']}'s output "
                                f"(cosine {cosine.min():.4f} < {LABEL_COSINE_MIN}); re-export the bundle")
        checked += 1
    return checked


def verify_bundle(folder: str | Path) -> Iterator[str]:
    """`dcclip-compress verify BUNDLE`: the manifest's files and hashes, each program's bundled samples through the
    runtime, and the label embeddings. Yields one line per check; the first failure raises a one-line UserError."""
    folder = Path(folder)
    manifest = _load_manifest(folder)
    yield f"files: {check_files(folder, manifest)} match {MANIFEST} (size and sha256)"
    programs = manifest.get("programs") or {}
    if not programs:
        raise UserError(f"verify: {MANIFEST} of {str(folder)!r} lists no programs; re-export the bundle")
    if _is_npu(manifest):  # nothing here runs an Ethos-U program: structure and hashes only
        for name in programs:
            check_pte(folder / name)
            yield f"{name}: a well-formed {manifest['target']} program (its samples need the NPU; not run here)"
        return
    for name, info in programs.items():
        n = run_bundled_samples(folder, name, info)
        yield f"{name}: {n} bundled samples reproduce their expected outputs"
    yield f"labels: {check_label_embeddings(folder, manifest)} embedding file(s) match the text program(s)"
