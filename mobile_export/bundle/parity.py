"""Parity vectors: what Python computes from a bundle's own files, written into `parity/` so the Android app's pure-Java
core (android_demo/core) can be checked against it on the JVM and on a phone.

Preprocessing and tokenizer mismatches are the bugs phone apps of CLIP-like models ship with (a CHW/HWC mix-up, a
tokenizer that lower-cases differently). The JUnit suite reads these files and must reproduce:
- the preprocessed tensor of each sample image (within 1e-6): `reference_preprocess` is the definition the Java
  `ImagePreprocessor` implements (composite over white, centre square crop, torch's antialiased bilinear resize, /255);
- the token ids of a fixed list of zh / en / mixed strings (exactly);
- the zero-shot top-5 of each image against the label embeddings (exactly), given the image embedding from the `.pte`.

Layout of parity/ (raw tensors are little-endian float32, row-major):
  parity.json                     what is below, plus the bundle's numbers
  images/<i>.png, images/<i>.f32  sample emoji renders (non-square, some smaller than the input) and their tensors
  image_embeddings.f32            (n_images, embed_dim), from the image .pte
  text_embeddings.f32             (n_texts, embed_dim), from the text .pte
  labels_<lang>.f32               (n_labels, embed_dim), L2-normalised label prompt embeddings, from the text .pte
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compress.atomic import write_json
from compress.errors import UserError
from compress.readers import open_image, read_json

PARITY_VERSION = 1
TOP_K = 5
# Sample images: (emoji, canvas width, height). Portrait, landscape, an upscale and one at a size the model may take.
SAMPLES = (("🐶", 131, 97), ("🍎", 97, 150), ("🚗", 40, 31), ("😀", 64, 64), ("🌧️", 300, 200), ("🇨🇳", 75, 120))
TEXTS = (
    "dog face", "an emoji of red apple", "a picture of a red car", "狗脸", "红苹果的表情符号", "一张汽车的图片",
    "Dog Face 狗脸", "😀 grinning face 笑脸", "ÉCOLE café naïve", "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３", "北京 Beijing 2024!",
    "", "   ", "[UNK] [PAD]", "e-mail, co-op & rock'n'roll", "一" * 80, "supercalifragilisticexpialidocious " * 6,
)
LABEL_TEMPLATE = {"en": "an emoji of {}", "zh": "{}的表情符号"}


def reference_preprocess(rgba: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3 or 4) -> float32 (3, size, size) in [0, 1]: the app's preprocessing, defined here.

    Alpha over white; centre crop of the largest square; torch's antialiased bilinear resize on float values (no 8-bit
    rounding in between); /255. The Java side (ImagePreprocessor) computes the same weights in double.
    """
    img = torch.from_numpy(np.array(rgba, dtype=np.float64))
    if img.shape[-1] == 4:
        a = img[..., 3:]
        img = (img[..., :3] * a + 255.0 * (255.0 - a)) / 255.0
    h, w = img.shape[:2]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    square = img[top : top + m, left : left + m].permute(2, 0, 1)[None]
    out = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (out[0] / 255.0).to(torch.float32)


def _render(emoji: str, width: int, height: int) -> np.ndarray:
    """The emoji drawn by the training font onto a white width x height canvas, RGB uint8 (H, W, 3)."""
    from PIL import Image

    from compress.data.emoji import _font, openmoji_font_path

    side = max(8, int(0.8 * min(width, height)))
    glyph = _font(str(openmoji_font_path()), 2 * side).render(emoji)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    if glyph is not None:
        glyph = glyph.resize((side, side), Image.Resampling.LANCZOS)
        canvas.paste(glyph, ((width - side) // 2, (height - side) // 2), glyph)
    return np.asarray(canvas)


def _label_names(bundle_dir: Path, limit: int | None) -> dict[str, list[str]]:
    """The label set to score against: the bundle's own labels.json when it has one in the app's layout, else the
    emoji classes' names."""
    own = bundle_dir / "labels.json"
    if own.is_file():
        meta = read_json(own, "label file", "re-export the bundle", kind=None)
        if isinstance(meta, dict) and isinstance(meta.get("labels"), list):  # mobile_export/bundle/write.py's layout
            langs = meta.get("languages") or ["en", "zh"]
            other = {"en": "zh", "zh": "en"}  # a one-language label scores with the name it has
            return {lang: [row.get(lang) or row.get(other.get(lang, "")) for row in meta["labels"][:limit]] for lang in langs}
        if isinstance(meta, dict) and isinstance(meta.get("langs"), dict):
            return {lang: list(v["names"])[:limit] for lang, v in meta["langs"].items()}
    from compress.data.emoji import emoji_classes

    classes = emoji_classes()[:limit]
    return {"en": [c.en for c in classes], "zh": [c.zh for c in classes]}


def _f32(path: Path, t: torch.Tensor) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return path.name


def cosine_topk(image: torch.Tensor, rows: torch.Tensor, k: int = TOP_K) -> tuple[list[int], list[float]]:
    """The app's scoring in float64 on float32 inputs: the query normalised to float32 first (as Scoring.l2Normalize),
    then cosines; ranked with compress/metrics.py's tie rule (stable descending sort)."""
    q = image.double()
    q = (q / q.norm().clamp_min(1e-12)).float().double()
    cos = rows.double() @ q
    order = torch.sort(cos, descending=True, stable=True).indices[:k]
    return order.tolist(), cos.tolist()


def write_parity(bundle_dir: Path, label_limit: int | None = 256) -> Path:
    """Write `bundle_dir/parity/` from the bundle's own files (bundle.json, tokenizer.json, the .pte pair).

    `label_limit`: how many labels (per language) the top-5 check scores against; the first N of the label set."""
    from mobile_export.runtime import PteModule

    bundle_dir = Path(bundle_dir)
    meta = _bundle_meta(bundle_dir)
    files = meta["files"]
    quant = "int8" if "int8" in files else next(iter(files))
    image_pte, text_pte = PteModule(bundle_dir / files[quant]["image"]), PteModule(bundle_dir / files[quant]["text"])
    return build_parity(bundle_dir, image_pte, text_pte, label_limit, quant)


def _bundle_meta(bundle_dir: Path) -> dict:
    meta_path = Path(bundle_dir) / "bundle.json"
    if not meta_path.is_file():
        raise UserError(f"parity: no bundle.json in {str(bundle_dir)!r}; pass an export folder")
    return read_json(meta_path, "export bundle file", "re-export the bundle")


def build_parity(bundle_dir: Path, encode_image, encode_text, label_limit: int | None = 256, quant: str = "",
                 computed_with: str | None = None) -> Path:
    """`write_parity` with the two towers given as callables (batch in, embeddings out): the `.pte` modules there, the
    eager towers in tests that must not spend time lowering."""
    from PIL import Image

    from compress.tokenizer import BilingualTokenizer

    bundle_dir = Path(bundle_dir)
    meta = _bundle_meta(bundle_dir)
    size, context = int(meta["image_size"]), int(meta["context_length"])
    tokenizer = BilingualTokenizer.load(bundle_dir / "tokenizer.json", context)
    out, tmp = bundle_dir / "parity", bundle_dir / "parity.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    images, tensors = [], []
    for i, (emoji, w, h) in enumerate(SAMPLES):
        Image.fromarray(_render(emoji, w, h)).save(tmp / "images" / f"{i}.png")
        pixels = np.array(open_image(tmp / "images" / f"{i}.png").convert("RGB"))  # what the app decodes
        x = reference_preprocess(pixels, size)
        tensors.append(x)
        _f32(tmp / "images" / f"{i}.f32", x)
        images.append({"emoji": emoji, "file": f"images/{i}.png", "width": w, "height": h, "tensor": f"images/{i}.f32"})
    with torch.no_grad():
        image_emb = encode_image(torch.stack(tensors)).float()
        text_emb = encode_text(tokenizer(list(TEXTS))).float()
        labels, top = {}, {}
        for lang, names in _label_names(bundle_dir, label_limit).items():
            prompts = [LABEL_TEMPLATE.get(lang, "{}").format(n) for n in names]
            rows = F.normalize(encode_text(tokenizer(prompts)).float(), dim=-1)
            labels[lang] = {"names": names, "file": _f32(tmp / f"labels_{lang}.f32", rows)}
            top[lang] = [cosine_topk(image_emb[i], rows)[0] for i in range(len(images))]
    fixed = [tokenizer.tokenizer.encode(t).ids for t in TEXTS]  # BilingualTokenizer pads and truncates to context_length
    write_json(tmp / "parity.json", {
        "version": PARITY_VERSION, "quant": quant, "image_size": size, "context_length": context,
        "pad_id": int(meta["pad_id"]), "embed_dim": int(meta["embed_dim"]), "logit_scale": float(meta["logit_scale"]),
        "images": images, "texts": [{"text": t, "ids": r} for t, r in zip(TEXTS, fixed)],
        "image_embeddings": {"file": _f32(tmp / "image_embeddings.f32", image_emb), "shape": list(image_emb.shape)},
        "text_embeddings": {"file": _f32(tmp / "text_embeddings.f32", text_emb), "shape": list(text_emb.shape)},
        "dim": int(image_emb.shape[-1]), "langs": labels, "top_k": TOP_K, "top": top, "label_templates": LABEL_TEMPLATE,
        **({"computed_with": computed_with} if computed_with else {}),
    })
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
