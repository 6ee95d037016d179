"""Use what you compressed, from Python: `from compress import load`.

    model = load("runs/mobilevit_int8")            # a run, a checkpoint folder, or an export bundle
    model.classify(["dog.jpg"], ["dog", "猫", {"en": "car", "zh": "汽车"}])
    model.encode_image(["a.png", pil_image, uint8_array])   # (N, D) float32, L2-normalised
    model.encode_text(["一只狗", "a red car"])

A run or checkpoint runs eagerly (PyTorch); a bundle runs its `.pte` programs through the ExecuTorch runtime, as the
phone does. Either way images are preprocessed as the bundle's `preprocess.json` says (alpha over white, centre
square, antialiased bilinear resize, /255: `mobile_export.bundle.parity.reference_preprocess`, the definition the
Android app's Java preprocessor is tested against), so the computer and the phone see the same pixels.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from compress.errors import UserError
from compress.prompts import LANGS, Templates, data_templates, with_templates
from compress.readers import field, open_image, read_json
from mobile_export.bundle.labels import Label, UnknownTokenWarning, as_labels, embed_rows, parse_labels, unknown_warnings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Prediction:
    label: Label
    score: float  # softmax probability over the label set (logit_scale x cosine)
    cosine: float

    @property
    def name(self) -> str:
        return self.label.display

    def as_dict(self) -> dict[str, Any]:
        return {**self.label.as_dict(), "score": round(self.score, 6), "cosine": round(self.cosine, 6)}


def to_pixels(image: Any) -> np.ndarray:
    """A path, a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4) -> uint8 (H, W, 3 or 4). A file's EXIF
    orientation is applied, as a photo viewer shows it."""
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        image = open_image(Path(image), "image", "pass a readable image file (PNG, JPEG, WebP, ...)")
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit / float grey: scale, don't clip
            grey = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode != "F" and grey.max() > 255 else max(float(grey.max()), 1e-12)
            return np.repeat(np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserError(f"image: a {image.dtype} array; pass uint8 pixels (H, W, 3) in 0..255")
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=-1)
        if image.ndim == 3 and image.shape[-1] in (3, 4) and min(image.shape[:2]) >= 1:
            return image
        raise UserError(f"image: an array of shape {image.shape}; pass (H, W), (H, W, 3) RGB or (H, W, 4) RGBA")
    raise UserError(f"image: {type(image).__name__} is not an image; pass a path, a PIL image or a uint8 array")


def image_files(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Paths as given; a folder stands for the images under it (recursively, sorted)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith("."))  # not macOS's ._ resource forks
            if not found:
                raise UserError(f"images: folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise UserError(f"images: {str(path)!r} not found; pass image files or folders")
    return out


class Model:
    """A compressed dual encoder, ready to embed and classify. Build it with `load`."""

    def __init__(self, kind: str, source: Path, image_fn: Callable[[torch.Tensor], torch.Tensor],
                 text_fn: Callable[[list[str]], torch.Tensor], tokenizer, image_size: int, logit_scale: float,
                 templates: Templates, dim: int, quant: str | None = None,
                 bundle_labels: Callable[[], tuple] | None = None):
        self.kind, self.source, self.quant = kind, source, quant
        self.tokenizer, self.image_size, self.logit_scale = tokenizer, image_size, logit_scale
        self.templates, self.dim = templates, dim  # dim: the embedding width
        self._image, self._text, self._bundle_labels = image_fn, text_fn, bundle_labels

    def __repr__(self) -> str:
        q = f", {self.quant}" if self.quant else ""
        return f"<dcclip Model {self.kind} {str(self.source)!r}{q}, {self.image_size}px>"

    # ------------------------------------------------------------------------------------------------ images
    def preprocess(self, images: Sequence[Any] | Any) -> torch.Tensor:
        """Images -> float32 (N, 3, S, S) in [0, 1], as preprocess.json says (normalisation is inside the model)."""
        from mobile_export.bundle.parity import reference_preprocess

        items = images if isinstance(images, (list, tuple)) else [images]
        return torch.stack([reference_preprocess(to_pixels(i), self.image_size) for i in items])

    @torch.no_grad()
    def encode_image(self, images: Sequence[Any] | Any, batch_size: int = 32,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, D) float32 L2-normalised image embeddings. `progress(n)` is called after each batch of n images."""
        items = images if isinstance(images, (list, tuple)) else [images]
        if not items:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            out.append(F.normalize(self._image(self.preprocess(chunk)).float(), dim=-1))
            if progress is not None:
                progress(len(chunk))
        return torch.cat(out).numpy()

    # ------------------------------------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str] | str, lang: str | None = None,
                    templates: Templates | Sequence[str] | None = None) -> np.ndarray:
        """(N, D) float32 L2-normalised text embeddings. `lang=None`: the texts as written (captions, search
        queries). `lang="en"` or `"zh"`: the texts are label names in that language, wrapped in the model's (or the
        given) templates and ensembled, as `classify` does."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        if lang is None:
            return F.normalize(self._text(items).float(), dim=-1).numpy()
        _check_lang(lang, "encode_text")
        labels = [Label(**{lang: t}) for t in items]
        return embed_rows(self._text, labels, lang, self._templates(templates)).numpy()

    def _templates(self, templates: Templates | Sequence[str] | None) -> Templates:
        if templates is None:
            return self.templates
        if isinstance(templates, Mapping):  # its keys say the language
            bad = [k for k in templates if k not in LANGS]
            if bad:
                raise UserError(f"templates: {bad[0]!r} is not a language; use {', '.join(LANGS)}")
            given = {la: [ts] if isinstance(ts, str) else list(ts) for la, ts in templates.items()}
            for ts in given.values():
                with_templates(self.templates, ts)  # checks each template (one line on a bad one)
            return {la: given.get(la) or list(self.templates[la]) for la in LANGS}
        return with_templates(self.templates, [templates] if isinstance(templates, str) else list(templates))

    def label_embeddings(self, labels: Sequence[Any], templates: Templates | Sequence[str] | None = None,
                         lang: str | None = None) -> tuple[list[Label], np.ndarray]:
        """(labels, (N, D) L2-normalised rows): `lang=None` ensembles a label's en and zh rows (a one-language
        label's rows are the same). Warns (`UnknownTokenWarning`) per name holding characters that map to [UNK]."""
        if isinstance(labels, (str, os.PathLike)):  # a label file or a comma-separated list, as `--labels` takes
            labels = parse_labels(str(labels))
        elif isinstance(labels, (Mapping, Label)):
            labels = [labels]
        labels = as_labels(labels)
        _check_lang(lang, "classify")
        for line in unknown_warnings(self.tokenizer, labels):
            warnings.warn(line, UnknownTokenWarning, stacklevel=3)
        ts = self._templates(templates)
        with torch.no_grad():
            rows = {la: embed_rows(self._text, labels, la, ts) for la in ([lang] if lang else LANGS)}
        emb = rows[lang] if lang else F.normalize(torch.stack([rows[la] for la in LANGS]).mean(0), dim=-1)
        return labels, emb.numpy()

    # ------------------------------------------------------------------------------------------------ classify
    def classify(self, images: Sequence[Any] | Any, labels: Sequence[Any] | None = None, top_k: int = 5,
                 templates: Templates | Sequence[str] | None = None, lang: str | None = None,
                 progress: Callable[[int], None] | None = None) -> list[list[Prediction]]:
        """Zero-shot top-k per image against `labels` (names in either language, {en, zh} mappings or Labels;
        None: a bundle's own label set, with its precomputed embeddings). Scores are softmax(logit_scale x cosine)."""
        if top_k < 1:
            raise UserError(f"classify: top_k {top_k} must be at least 1")
        _check_lang(lang, "classify")
        if not (images if isinstance(images, (list, tuple)) else [images]):
            return []
        if labels is None:
            if self._bundle_labels is None:
                raise UserError("classify: pass labels (names in en or zh); only an export bundle carries its own set")
            label_set, rows = self._bundle_labels()
            rows = rows[LANGS.index(lang)] if lang else _normalise(rows.mean(0))
        else:
            label_set, rows = self.label_embeddings(labels, templates, lang)
        img = self.encode_image(images, progress=progress)
        cos = torch.from_numpy(img).double() @ torch.from_numpy(np.asarray(rows)).double().T
        probs = torch.softmax(self.logit_scale * cos, dim=-1)
        k = min(top_k, len(label_set))
        out = []
        for i in range(len(img)):
            order = torch.sort(cos[i], descending=True, stable=True).indices[:k]
            out.append([Prediction(label_set[j], float(probs[i, j]), float(cos[i, j])) for j in order.tolist()])
        return out


def _check_lang(lang: str | None, what: str) -> None:
    if lang is not None and lang not in LANGS:
        raise UserError(f"{what}: lang {lang!r} is not one of {', '.join(LANGS)} (or None)")


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------------- load
def load(ref: str | os.PathLike | None = None, quant: str | None = None) -> Model:
    """A run folder, a checkpoint folder (model.json + model.safetensors) or an export bundle -> `Model`.

    None: the newest finished run. `quant` picks a bundle's programs (default: int8 when it has them, else fp32)."""
    from compress.pipeline.refs import latest_run, resolve_ref

    ref = resolve_ref(latest_run("load") if ref is None else ref)
    if ref.kind in ("run", "checkpoint"):
        if quant not in (None, "fp32"):
            raise UserError(f"load: {str(ref.path)!r} is eager fp32; for {quant}, load its export bundle")
        return _eager(ref)
    if ref.kind in ("bundle", "pte"):
        return _bundle(ref.path if ref.kind == "bundle" else ref.path.parent, quant)
    raise UserError(f"load: {ref.spec!r} is not a run, checkpoint or export bundle; pass runs/<name>, "
                    "runs/<name>/student_fp32 or runs/<name>/export")


def _eager(ref) -> Model:
    from compress.model import load_checkpoint
    from compress.pipeline.export import trained_templates

    model, tokenizer, _ = load_checkpoint(ref.checkpoint)
    model.eval()
    return Model(ref.kind, ref.path, model.image, lambda texts: model.text(tokenizer(texts)), tokenizer,
                 model.spec.image_size, float(model.logit_scale.detach().exp()), trained_templates(ref),
                 model.spec.embed_dim)


def _bundle(folder: Path, quant: str | None) -> Model:
    from compress.pipeline.compare import open_bundle
    from compress.readers import read_bytes
    from mobile_export.runtime import PteModule

    b = open_bundle(folder, quant)
    what, fix = "export bundle file", "re-export the bundle with `dcclip-compress export`"
    if not _runs_on_host(b.bundle):
        raise UserError(f"load: {str(folder)!r} is a {b.bundle.get('target')} bundle; its programs cannot run on this "
                        "host (load the run or checkpoint it came from instead)")
    image, text = PteModule(b.files["image"]), PteModule(b.files["text"])
    templates = b.bundle.get("templates") or {la: [t] for la, t in (b.bundle.get("prompt_templates") or {}).items()}
    templates = templates or data_templates("emoji")
    encode_text = lambda texts: text(b.tokenizer(texts))  # noqa: E731

    def bundle_labels() -> tuple[list[Label], np.ndarray]:
        lpath = folder / "labels.json"
        doc = read_json(lpath, "label file", fix)
        entry = (field(doc, "embeddings", dict, lpath, "label file", fix, default={}) or {}).get(b.quant)
        labels = as_labels(field(doc, "labels", list, lpath, "label file", fix))
        if entry is None:  # no precomputed rows for these programs: embed now
            with torch.no_grad():
                ts = doc.get("templates") or templates
                return labels, torch.stack([embed_rows(encode_text, labels, la, ts) for la in LANGS]).numpy()
        name = field(entry, "file", str, lpath, "label file", fix)
        if "/" in name or name in (".", ".."):
            raise UserError(f"label file {str(lpath)!r}: embeddings.{b.quant}.file must name a file in the bundle; {fix}")
        raw = read_bytes(folder / name, "label embeddings", fix)
        dim = len(raw) // 4 // max(len(labels) * len(LANGS), 1)
        if dim < 1 or len(raw) != 4 * len(LANGS) * len(labels) * dim:
            raise UserError(f"label embeddings {str(folder / name)!r}: {len(raw)} bytes are not {len(LANGS)} x "
                            f"{len(labels)} float32 rows; {fix}")
        return labels, np.frombuffer(raw, dtype="<f4").reshape(len(LANGS), len(labels), dim)

    return Model("bundle", b.folder, lambda x: image(x), encode_text, b.tokenizer, b.image_size,
                 float(b.bundle.get("logit_scale", 100.0)), templates,
                 field(b.bundle, "embed_dim", int, folder / "bundle.json", what, fix), quant=b.quant,
                 bundle_labels=bundle_labels)


def _runs_on_host(bundle: dict) -> bool:
    from mobile_export.lower.targets import get_target

    try:
        return get_target(str(bundle.get("target"))).runs_on_host
    except UserError:
        return False


# ---------------------------------------------------------------------------------------------------- the commands
EMBED_FORMAT = "dcclip-compress-embeddings/1"


def _collect_warnings(fn: Callable[[], Any], say: Callable[[str], None]) -> Any:
    """Run `fn`, passing each [UNK] warning to `say` as a `warning:` line instead of Python's warning format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownTokenWarning)
        result = fn()
    for w in caught:
        if issubclass(w.category, UnknownTokenWarning):
            say(f"warning: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


def _progress(description: str, total: int):
    """A rich progress bar for large inputs (a folder of photos); nothing for a handful."""
    from contextlib import nullcontext

    from compress.progress import progress_bar

    if total < 64:
        return nullcontext(None)
    return progress_bar(description, total)


def classify_command(ref: str | None, inputs: Sequence[str], labels: str | None, templates: Sequence[str], top_k: int,
                     lang: str | None, quant: str | None, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """`dcclip-compress classify`: [{"image", "top": [{en, zh, score, cosine}, ...]}, ...] in input order."""
    from mobile_export.bundle.labels import parse_labels

    label_set = parse_labels(labels) if labels is not None else None  # a bad label list fails before loading
    files = image_files(inputs)
    model = load(ref, quant)
    if label_set is None and model._bundle_labels is None:
        raise UserError("classify: pass --labels (a file, or names such as dog,cat,狗); only an export bundle carries "
                        "its own label set")
    with _progress("classify", len(files)) as bar:
        step = (lambda n: [bar(f"{n} images") for _ in range(n)]) if bar else None
        results = _collect_warnings(lambda: model.classify(files, label_set, top_k, templates or None, lang, step), say)
    return [{"image": str(f), "top": [p.as_dict() for p in preds]} for f, preds in zip(files, results)]


def embed_command(ref: str | None, images: Sequence[str], texts: Sequence[str], lang: str | None, quant: str | None,
                  out: Path, say: Callable[[str], None]) -> tuple[Path, tuple[int, int]]:
    """`dcclip-compress embed`: (N, D) float32 L2-normalised rows to `out` (.npy) and what each row is to
    `out` with .json (kind, model, items in order)."""
    from compress.atomic import atomic_path, write_json
    from compress.readers import read_text

    if bool(images) == bool(texts):
        raise UserError("embed: pass --images (files or folders) or --texts (strings or .txt files), not both")
    if out.suffix != ".npy":
        raise UserError(f"embed: --out {str(out)!r} must end in .npy")
    sidecar = out.with_suffix(".json")
    if out.exists() or sidecar.exists():
        try:
            mine = read_json(sidecar, "embedding index", "").get("format") == EMBED_FORMAT
        except (UserError, AttributeError):
            mine = False
        if not mine:
            raise UserError(f"embed: {str(out if out.exists() else sidecar)!r} exists and embed did not write it; pass "
                            "--out a new file (nothing was written)")
    if images:
        files = image_files(images)
        items = [str(f) for f in files]
    else:
        items = []
        for t in texts:
            p = Path(t)
            if p.suffix == ".txt" and p.is_file():
                items += [line.strip() for line in read_text(p, "texts file", "save it as UTF-8, one text per line",
                                                             encoding="utf-8-sig").splitlines() if line.strip()]
            else:
                items.append(t)
        if not items:
            raise UserError("embed: --texts holds no text; pass strings or a .txt file with one text per line")
    model = load(ref, quant)
    with _progress("embed", len(items)) as bar:
        if images:
            step = (lambda n: [bar(f"{n} images") for _ in range(n)]) if bar else None
            emb = model.encode_image(files, progress=step)
        else:
            emb = np.concatenate([_collect_warnings(lambda c=chunk: model.encode_text(c, lang), say)
                                  for chunk in (items[i : i + 256] for i in range(0, len(items), 256))])
            if bar:
                [bar("texts") for _ in items]
    with atomic_path(out, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype("<f4"))
    write_json(sidecar, {"format": EMBED_FORMAT, "kind": "images" if images else "texts", "lang": lang,
                         "model": str(model.source), "quant": model.quant, "shape": list(emb.shape),
                         "l2_normalized": True, "items": items})
    return out, tuple(emb.shape)
