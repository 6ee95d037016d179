"""Recipe `data` section -> training pairs + zero-shot eval splits.

Zero-shot eval always runs on the built-in emoji splits (classes with en + zh names); a manifest only changes what
the students train on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from compress.data.emoji import EmojiData, Split, build_emoji_dataset
from compress.data.pairs import PairSet
from compress.recipe.schema import DataConfig


@dataclass
class RunData:
    train: PairSet
    eval_splits: dict[str, Split]
    names: dict[str, dict[int, str]]  # lang -> class id -> name
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = "emoji-zh-en"


def emoji_pairs(data: EmojiData) -> PairSet:
    """Train split -> pairs, one group per class: renders of every style of a class share its group (and names)."""
    train = data.splits["train"]
    by_index = {c.index: c for c in data.classes}
    group_ids = sorted(set(train.labels.tolist()))
    pos = {c: i for i, c in enumerate(group_ids)}
    groups = torch.tensor([pos[int(l)] for l in train.labels])
    return PairSet(train.images, groups, [by_index[c].en for c in group_ids], [by_index[c].zh for c in group_ids], templated=True)


def load_run_data(cfg: DataConfig, seed: int) -> RunData:
    emoji = build_emoji_dataset(
        cfg.cache_dir, image_size=cfg.image_size, train_renders=cfg.train_renders, eval_renders=cfg.eval_renders,
        unseen_fraction=cfg.unseen_fraction, seed=seed, limit=cfg.limit, train_styles=cfg.train_styles,
    )
    names = emoji.names
    evals = {k: v for k, v in emoji.splits.items() if k != "train"}
    if cfg.kind == "emoji":
        return RunData(emoji_pairs(emoji), evals, names)
    if cfg.kind == "webdataset":
        from compress.data.webdataset import load_shards

        m, source = load_shards(cfg.shards, image_size=cfg.image_size), f"webdataset:{cfg.shards}"
    else:
        from compress.data.manifest import load_manifest

        m, source = load_manifest(cfg.manifest, image_size=cfg.image_size), f"manifest:{cfg.manifest}"
    # One group per row; a row with one language has None for the other (training masks it, see PairSet).
    return RunData(m.pairs(), evals, names, skipped=dict(m.skipped), source=source)
