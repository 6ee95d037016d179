"""Zero-shot classification, the same way for every model kind (teacher, eager student, int8 eager, `.pte`).

Class text embeddings are computed once per (class set, language); images are embedded in batches. Ties in top-k
follow the rule in `compress.eval.metrics` (exactly equal scores: the lower class index ranks first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from compress.eval import metrics
from compress.data.augment import to_float
from compress.prompts import LANGS, eval_prompts


@dataclass
class Encoders:
    """A model as zero-shot eval sees it: pixels in [0, 1] -> embeddings, strings -> embeddings."""

    name: str
    encode_image: Callable[[torch.Tensor], torch.Tensor]
    encode_text: Callable[[Sequence[str]], torch.Tensor]
    params: int
    image_size: int = 224  # the square input the image side expects; datasets are resized + centre-cropped to it


def embed_in_batches(fn: Callable, items, batch_size: int) -> torch.Tensor:
    outs = []
    for start in range(0, len(items), batch_size):
        with torch.inference_mode():
            outs.append(fn(items[start : start + batch_size]).float().cpu())
    return F.normalize(torch.cat(outs), dim=-1)


def embed_image_batches(enc: Encoders, batches: Iterable[torch.Tensor], steps: int, description: str) -> torch.Tensor:
    """L2-normalised image embeddings of uint8 batches, with a progress bar (datasets of any size)."""
    from compress.progress import progress_bar

    outs = []
    with progress_bar(description, steps) as advance:
        for batch in batches:
            with torch.inference_mode():
                outs.append(enc.encode_image(to_float(batch)).float().cpu())
            advance()
    return F.normalize(torch.cat(outs), dim=-1)


def zero_shot_scores(
    enc: Encoders, images: torch.Tensor, labels: torch.Tensor, class_ids: Sequence[int],
    names: dict[str, Sequence[str]], batch_size: int = 256, langs: Sequence[str] = LANGS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(targets as rows of `class_ids`, per language the (N, classes) image-prompt cosines): what zero-shot top-k
    is computed from, for callers that compare predictions image by image."""
    pos = {c: i for i, c in enumerate(class_ids)}
    targets = torch.tensor([pos[int(l)] for l in labels])
    img = embed_in_batches(lambda x: enc.encode_image(to_float(x)), images, batch_size)
    scores = {}
    for lang in langs:
        prompts = eval_prompts([names[lang][c] for c in class_ids], lang)
        scores[lang] = img @ embed_in_batches(enc.encode_text, prompts, batch_size).t()
    return targets, scores


def zero_shot(
    enc: Encoders, images: torch.Tensor, labels: torch.Tensor, class_ids: Sequence[int],
    names: dict[str, Sequence[str]], batch_size: int = 256, langs: Sequence[str] = LANGS,
) -> dict[str, dict[str, float]]:
    """images uint8 (N,3,H,W); labels are global class ids; names[lang][class_id] is the class name."""
    if len(images) == 0 or len(class_ids) == 0:
        return {}
    targets, scores = zero_shot_scores(enc, images, labels, class_ids, names, batch_size, langs)
    return {lang: metrics.topk_accuracy(s, targets) for lang, s in scores.items()}


def eager_encoders(name: str, model, tokenizer) -> Encoders:
    """A DualEncoder (fp32 or any eager module pair) with its own tokenizer."""
    model.eval()
    return Encoders(name, model.image, lambda texts: model.text(tokenizer(texts)), model.tower_params(), model.spec.image_size)


def teacher_encoders(teacher) -> Encoders:
    return Encoders(
        "teacher", lambda x: teacher.encode_image(x).embedding, lambda t: teacher.encode_text(t).embedding,
        teacher.num_params(), int(getattr(teacher, "image_size", 224)),
    )
