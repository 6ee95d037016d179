"""Image<->text retrieval, R@1/5/10 both ways and mean recall, in English and Chinese.

Sets come from the built-in emoji eval split or from `--manifest` files in one of two layouts:

* our JSONL, one image per line with any number of captions per language (Flickr30k-CN / COCO-CN have 5)::

      {"image": "images/1000092795.jpg", "en": ["Two young guys ...", "..."], "zh": ["两个年轻人 ...", "..."]}

  A single string is one caption; a language may be missing on some lines. Paths are relative to the manifest's
  folder and may not leave it.
* Chinese-CLIP's retrieval layout, as its Flickr30k-CN / COCO-CN / MUGE downloads ship: pass `<split>_texts.jsonl`
  (``{"text_id": 1, "text": "...", "image_ids": [1000092795]}`` per line) with `<split>_imgs.tsv` beside it
  (``image_id<TAB>base64 image`` per line). A caption counts as Chinese when it contains a CJK character, else English.

Per language, every image is in the gallery; images with no caption in that language are not image->text queries.
"""
from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from compress.eval import metrics
from compress.data.augment import resize_uint8
from compress.data.labelled import open_image, preprocessed_batches, read_jsonl
from compress.data.manifest import _safe_path
from compress.errors import UserError
from compress.readers import read_text
from compress.eval.zero_shot import Encoders, embed_image_batches, embed_in_batches
from compress.prompts import EVAL_TEMPLATE, caption_lang


@dataclass
class RetrievalSet:
    name: str
    num_images: int
    batches: Callable[[int, int], object]  # (image_size, batch_size) -> iterator of uint8 (B, 3, S, S)
    captions: dict[str, list[str]]  # lang -> captions
    caption_images: dict[str, list[list[int]]]  # lang -> the image indices each caption describes

    def positives(self, lang: str) -> torch.Tensor:
        """bool (num_images, num_captions): which caption describes which image."""
        pos = torch.zeros(self.num_images, len(self.captions[lang]), dtype=torch.bool)
        for j, owners in enumerate(self.caption_images[lang]):
            pos[owners, j] = True
        return pos


def _as_list(value) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return value
    return None


def load_manifest(path: Path, langs: Sequence[str]) -> RetrievalSet:
    if not path.is_file():
        raise UserError(f"--manifest: {str(path)!r} not found; pass a JSONL file with one {{\"image\", \"en\", \"zh\"}} row per image")
    if path.name.endswith("_texts.jsonl"):
        return load_chinese_clip_split(path, langs)
    root = path.parent.resolve()
    files: list[Path] = []
    captions: dict[str, list[str]] = {lang: [] for lang in langs}
    owner: dict[str, list[list[int]]] = {lang: [] for lang in langs}
    for where, row in read_jsonl(path, '{"image": ..., "en": [...], "zh": [...]}'):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise UserError(f"{where}: needs \"image\" (a path relative to the manifest)")
        target = _safe_path(root, row["image"])
        if target is None or not target.is_file():
            raise UserError(f"{where}: image {row['image']!r} is missing or leaves {str(root)!r}")
        found = False
        for lang in langs:
            caps = _as_list(row.get(lang)) if lang in row else None
            if lang in row and caps is None:
                raise UserError(f"{where}: {lang!r} must be a non-empty string or list of strings")
            for c in caps or []:
                captions[lang].append(c)
                owner[lang].append([len(files)])
                found = True
        if not found:
            raise UserError(f"{where}: no caption in {', '.join(langs)}")
        files.append(target)
    if not files:
        raise UserError(f"{path}: no rows")

    def batches(size: int, batch_size: int):
        return preprocessed_batches(lambda i: open_image(files[i]), len(files), size, batch_size)

    return RetrievalSet(path.stem, len(files), batches, captions, owner)


def load_chinese_clip_split(texts: Path, langs: Sequence[str]) -> RetrievalSet:
    """Chinese-CLIP's `<split>_texts.jsonl` + `<split>_imgs.tsv` (base64 images); every tsv image is in the gallery."""
    imgs = texts.with_name(texts.name[: -len("_texts.jsonl")] + "_imgs.tsv")
    if not imgs.is_file():
        raise UserError(f"--manifest: {texts.name} needs {imgs.name} beside it (Chinese-CLIP layout: image_id<TAB>base64)")
    ids: list[str] = []
    blobs: list[str] = []
    lines: list[int] = []
    text = read_text(imgs, "retrieval image file", "it must be UTF-8 text, one image_id<TAB>base64 line per image")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise UserError(f"{imgs}:{lineno}: expected image_id<TAB>base64")
        ids.append(parts[0].strip())
        blobs.append(parts[1].strip())
        lines.append(lineno)
    index = {i: n for n, i in enumerate(ids)}
    captions: dict[str, list[str]] = {lang: [] for lang in langs}
    owner: dict[str, list[list[int]]] = {lang: [] for lang in langs}
    for where, row in read_jsonl(texts, '{"text_id": ..., "text": ..., "image_ids": [...]}'):
        text, image_ids = (row.get("text"), row.get("image_ids")) if isinstance(row, dict) else (None, None)
        if not isinstance(text, str) or not text.strip() or not isinstance(image_ids, list) or not image_ids:
            raise UserError(f"{where}: needs \"text\" (a string) and \"image_ids\" (a non-empty list)")
        missing = [i for i in image_ids if str(i) not in index]
        if missing:
            raise UserError(f"{where}: image id {missing[0]} is not in {imgs.name}")
        lang = caption_lang(text)
        if lang in captions:
            captions[lang].append(text)
            owner[lang].append([index[str(i)] for i in image_ids])
    if not any(captions.values()):
        raise UserError(f"{texts}: no caption in {', '.join(langs)}")

    def image(i: int):
        where = f"{imgs}:{lines[i]}"
        try:
            data = base64.b64decode(blobs[i], validate=True)
        except (binascii.Error, ValueError):
            raise UserError(f"{where}: image {ids[i]!r} is not valid base64; re-create the line from the image file "
                            "(base64 of its bytes), or remove it") from None
        return open_image(io.BytesIO(data), name=f"{where} (image {ids[i]})")

    def batches(size: int, batch_size: int):
        return preprocessed_batches(image, len(blobs), size, batch_size)

    return RetrievalSet(texts.name[: -len("_texts.jsonl")] + "@" + texts.parent.name, len(blobs), batches, captions, owner)


def emoji_retrieval_set(images: torch.Tensor, labels: torch.Tensor, names: dict[str, dict[int, str]],
                        langs: Sequence[str]) -> RetrievalSet:
    """First render of each class; two captions per language: the eval prompt and the bare name."""
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        seen.setdefault(int(label), i)
    classes = list(seen)
    picked = images[list(seen.values())]
    captions = {lang: [c for k in classes for c in (EVAL_TEMPLATE[lang].format(names[lang][k]), names[lang][k])]
                for lang in langs}
    owner = {lang: [[i] for i in range(len(classes)) for _ in range(2)] for lang in langs}

    def batches(size: int, batch_size: int):
        return (resize_uint8(picked[s : s + batch_size], size) for s in range(0, len(picked), batch_size))

    return RetrievalSet("emoji", len(classes), batches, captions, owner)


def evaluate_retrieval(enc: Encoders, rs: RetrievalSet, langs: Sequence[str], batch_size: int = 128) -> dict[str, dict]:
    steps = (rs.num_images + batch_size - 1) // batch_size
    img = embed_image_batches(enc, rs.batches(enc.image_size, batch_size), steps, f"{enc.name} retrieval/{rs.name}")
    result: dict[str, dict] = {"images": rs.num_images}
    for lang in langs:
        if not rs.captions.get(lang):
            continue
        txt = embed_in_batches(enc.encode_text, rs.captions[lang], batch_size)
        result[lang] = {"captions": len(rs.captions[lang]), **metrics.retrieval_recalls(img @ txt.t(), rs.positives(lang))}
    return result
