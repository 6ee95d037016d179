"""The ELEVATER image-classification suite (20 datasets), zero-shot, in English and Chinese.

Class names, prompt templates and each dataset's metric are data (`compress/eval_data/elevater/`, sources in its
SOURCES.md), not code. The protocol follows ELEVATER's `clip_zeroshot_evaluator`: per class, the prompt embeddings of
all templates are L2-normalised, averaged and re-normalised (CLIP prompt ensembling); images are scored by cosine; the
metric is the one ELEVATER names per dataset (see `compress.eval.metrics` for the tie rule and the softmax detail).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from compress.eval import metrics
from compress.data.labelled import LabelledImages, find_labelled_images
from compress.errors import UserError, did_you_mean
from compress.eval.zero_shot import Encoders, embed_image_batches, embed_in_batches
from compress.readers import read_json, read_text

DATA_DIR = Path(__file__).parent.parent / "eval_data" / "elevater"
METRICS = ("accuracy", "mean_per_class", "roc_auc", "11point_mAP")


@dataclass(frozen=True)
class ElevaterDataset:
    key: str
    name: str
    metric: str
    num_classes: int
    multilabel: bool
    classes: dict[str, list[str]]  # lang -> class names, in label order
    templates: dict[str, list[str]]  # lang -> templates with one "{}"
    torchvision: str | None = None
    torchvision_kwargs: dict | None = None
    torchvision_label_map: list[int] | None = None  # torchvision label -> index in `classes`
    torchvision_same_order: bool = True
    torchvision_note: str | None = None  # set when torchvision's test set is not ELEVATER's (scores not comparable)


@functools.cache
def elevater_datasets() -> dict[str, ElevaterDataset]:
    fix = "reinstall dcclip-compress (the file ships with it)"
    meta = read_json(DATA_DIR / "datasets.json", "packaged data", fix)
    langs = {lang: read_json(DATA_DIR / f"{lang}.json", "packaged data", fix) for lang in ("en", "zh")}
    return {
        key: ElevaterDataset(
            key=key, name=m["name"], metric=m["metric"], num_classes=int(m["num_classes"]),
            multilabel=bool(m.get("multilabel", False)),
            classes={lang: d[key]["classes"] for lang, d in langs.items()},
            templates={lang: d[key]["templates"] for lang, d in langs.items()},
            torchvision=m.get("torchvision"), torchvision_kwargs=m.get("torchvision_kwargs") or {},
            torchvision_label_map=m.get("torchvision_label_map"),
            torchvision_same_order=m.get("torchvision_label_order", "same") == "same",
            torchvision_note=None if m.get("torchvision_comparable", True) else m.get("torchvision_note"),
        )
        for key, m in meta.items()
    }


def select_datasets(names: Sequence[str] | None) -> list[ElevaterDataset]:
    """All 20 in ELEVATER order, or the named ones (one-line error with the valid names otherwise)."""
    table = elevater_datasets()
    if not names:
        return list(table.values())
    bad = [n for n in names if n not in table]
    if bad:
        raise UserError(f"--datasets: {bad[0]!r} is not an ELEVATER dataset; {did_you_mean(bad[0], table)}")
    return [table[n] for n in names]


def fill(template: str, name: str) -> str:
    # str.replace, not str.format: class names may contain braces.
    return template.replace("{}", name)


def class_embeddings(enc: Encoders, classes: Sequence[str], templates: Sequence[str], batch_size: int) -> torch.Tensor:
    """(C, D) zero-shot classifier: per class, the normalised mean of its normalised template embeddings."""
    prompts = [fill(t, c) for c in classes for t in templates]
    emb = embed_in_batches(enc.encode_text, prompts, batch_size)
    return F.normalize(emb.view(len(classes), len(templates), -1).mean(1), dim=-1)


def score(metric: str, cosines: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """{"score": <the dataset's metric>, ...}; single-label sets also report top-1/top-5."""
    out: dict[str, float] = {}
    if labels.ndim == 1:
        out |= metrics.topk_accuracy(cosines, labels, (1, min(5, cosines.shape[1])))
    if metric == "accuracy":
        out["score"] = out["top1"]
    elif metric == "mean_per_class":
        out["score"] = metrics.mean_per_class_accuracy(cosines, labels)
    elif metric == "roc_auc":
        out["score"] = metrics.roc_auc(metrics.elevater_probs(cosines)[:, 1], labels == 1)
    elif metric == "11point_mAP":
        hot = labels if labels.ndim == 2 else F.one_hot(labels, cosines.shape[1]).bool()
        out["score"] = metrics.mean_average_precision_n_points(metrics.elevater_probs(cosines), hot)
    else:
        raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
    return out


def chinese_clip_names(folder: Path, num_classes: int) -> list[str] | None:
    """Chinese-CLIP's published Chinese class names, when its `label_cn.txt` sits in the dataset folder (as in its
    ELEVATER archive); they replace our bundled translation."""
    path = folder / "label_cn.txt"
    if not path.is_file():
        return None
    text = read_text(path, "class-name file", "save it as UTF-8 text, one Chinese class name per line",
                     encoding="utf-8-sig")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise UserError(f"{path}: {len(names)} names for {num_classes} classes; one Chinese class name per line, "
                        "in label order")
    return names


@dataclass
class OpenDataset:
    """An ELEVATER dataset found on disk: its images and labels, and the class names each language uses."""

    spec: ElevaterDataset
    images: LabelledImages
    names: dict[str, list[str]]
    zh_source: str


def open_elevater(datasets: Sequence[ElevaterDataset], data_root: Path) -> tuple[list[OpenDataset], dict[str, str]]:
    """Find each dataset once (folder scan, label files), whatever number of models is scored on it afterwards.
    A dataset missing from data_root is a skip reason, not an error."""
    opened: list[OpenDataset] = []
    skipped: dict[str, str] = {}
    for ds in datasets:
        folder = data_root / ds.key
        found = find_labelled_images(folder, ds.classes["en"], ds.multilabel, ds.torchvision, ds.torchvision_kwargs,
                                     ds.torchvision_label_map, ds.torchvision_same_order)
        if isinstance(found, str):
            skipped[ds.key] = found
            continue
        names, zh_source = dict(ds.classes), "bundled translation (compress/eval_data/elevater/zh.json)"
        published = chinese_clip_names(folder, ds.num_classes)
        if published is not None:
            names["zh"], zh_source = published, "label_cn.txt (Chinese-CLIP)"
        opened.append(OpenDataset(ds, found, names, zh_source))
    return opened, skipped


def score_elevater(enc: Encoders, opened: Sequence[OpenDataset], langs: Sequence[str], batch_size: int = 128) -> dict:
    """{dataset: {"metric", "n", "layout", "zh_classes", lang: scores}} for one model."""
    results: dict[str, dict] = {}
    for od in opened:
        ds, found = od.spec, od.images
        steps = (len(found) + batch_size - 1) // batch_size
        img = embed_image_batches(enc, found.batches(enc.image_size, batch_size), steps, f"{enc.name} {ds.key}")
        entry: dict = {"metric": ds.metric, "n": len(found), "layout": found.layout, "zh_classes": od.zh_source}
        if found.layout.startswith("torchvision") and ds.torchvision_note:
            entry["warning"] = ds.torchvision_note
        for lang in langs:
            txt = class_embeddings(enc, od.names[lang], ds.templates[lang], batch_size)
            entry[lang] = score(ds.metric, img @ txt.t(), found.labels)
        results[ds.key] = entry
    return results


def evaluate_elevater(enc: Encoders, datasets: Sequence[ElevaterDataset], data_root: Path, langs: Sequence[str],
                      batch_size: int = 128) -> tuple[dict, dict[str, str]]:
    """One model: `open_elevater` then `score_elevater`."""
    opened, skipped = open_elevater(datasets, data_root)
    return score_elevater(enc, opened, langs, batch_size), skipped
