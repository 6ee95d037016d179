"""Recipe `data` section -> training pairs + zero-shot eval splits.

Zero-shot eval always runs on the built-in emoji splits (classes with en + zh names); a manifest only changes what
the students train on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from compress.data.emoji import EmojiData, Split, build_emoji_dataset
from compress.data.pairs import PairSet, image_only_pairs, labelled_pairs, stage1_pairs, text_only_pairs
from compress.data.world import ClassSplit, restrict, split_classes, unseen_strata
from compress.recipe.schema import DataConfig, Recipe


@dataclass
class RunData:
    train: PairSet
    eval_splits: dict[str, Split]
    names: dict[str, dict[int, str]]  # lang -> class id -> name
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = "emoji-zh-en"
    world: ClassSplit | None = None  # the S/K/U class split (data.split_seed), None in today's world
    known: PairSet | None = None  # K's train renders as pairs (the S/K/U world, students' pairs): distill "world" data
    # Unpaired stage-1 data (distill.unpaired_images / text_only; `with_unpaired` fills them): stage 1, and stage 2's anchor with align.retain
    unpaired_images: PairSet | None = None
    text_only: PairSet | None = None

    @property
    def stage1(self) -> PairSet:
        """Stage 1's training set: the pairs, then the image-only and text-only rows (`train` itself without them)."""
        return stage1_pairs(self.train, self.unpaired_images, self.text_only)


def with_unpaired(recipe: Recipe, data: RunData) -> RunData:
    """`data` with the recipe's unpaired stage-1 data (distill.unpaired_images / text_only): "world" is K's
    renders (images) and K's names in both languages (text, templated like the pairs); anything else a file
    (compress/data/unpaired.py). Unset: nothing changes."""
    d = recipe.distill
    if d.unpaired_images is None and d.text_only is None:
        return data
    shape = tuple(data.train.images.shape[1:])
    if d.unpaired_images == "world" or d.text_only == "world":
        if data.known is None:  # the recipe validator asks for data.split_seed and pairs: students
            raise ValueError("distill 'world' data needs the S/K/U world's K pairs (data.split_seed)")
    images = text = None
    if d.unpaired_images == "world":
        images = image_only_pairs(data.known.images, data.known.groups)
    elif d.unpaired_images is not None:
        from compress.data.unpaired import load_image_only

        images = load_image_only(d.unpaired_images, recipe.data.image_size)
    if d.text_only == "world":
        k = data.known
        text = text_only_pairs([[n] for n in k.en], [[n] for n in k.zh], k.templated, shape)
    elif d.text_only is not None:
        from compress.data.unpaired import load_text_only

        text = load_text_only(d.text_only, data.train.templated, shape)
    return replace(data, unpaired_images=images, text_only=text)


def pseudo_labelled(recipe: Recipe, full: RunData, teacher) -> tuple[PairSet, dict]:
    """Stage 2's pairs for `align.pseudo_label` (`full`: the run's data `with_unpaired`): the pairs plus
    distill.unpaired_images, each captioned by the
    teacher's zero-shot guess among distill.text_only's names (cosines averaged over the languages a name has): the
    baseline that uses the teacher only to label, then trains contrastively. -> (pairs, what the labelling did)."""
    from compress.data.augment import to_float
    from compress.eval.zero_shot import embed_in_batches, teacher_encoders
    from compress.prompts import eval_prompts

    images, names = full.unpaired_images, full.text_only
    enc = teacher_encoders(teacher)
    img = embed_in_batches(lambda x: enc.encode_image(to_float(x)), images.images, 256)
    score, count = torch.zeros(len(img), names.num_groups), torch.zeros(names.num_groups)
    for lang in ("en", "zh"):
        has = names.has(lang)
        if not bool(has.any()):
            continue
        cols = has.nonzero().flatten()
        txt = embed_in_batches(enc.encode_text, eval_prompts([(names.en if lang == "en" else names.zh)[int(g)]
                                                              for g in cols], lang), 256)
        score[:, cols] += img @ txt.t()
        count[cols] += 1
    labels = (score / count.clamp(min=1)).argmax(1).tolist()
    info = {"images": len(labels), "names": names.num_groups, "names_used": len(set(labels))}
    if full.known is not None and recipe.distill.unpaired_images == "world" and recipe.distill.text_only == "world":
        truth = images.groups.tolist()  # the world's K renders and K names share the class order
        info["agree_with_class"] = sum(int(a == b) for a, b in zip(labels, truth)) / max(1, len(truth))
    return labelled_pairs(full.train, images.images, labels, names), info


def emoji_pairs(data: EmojiData) -> PairSet:
    """Train split -> pairs, one group per class: renders of every style of a class share its group (and names)."""
    train = data.splits["train"]
    by_index = {c.index: c for c in data.classes}
    group_ids = sorted(set(train.labels.tolist()))
    pos = {c: i for i, c in enumerate(group_ids)}
    groups = torch.tensor([pos[int(l)] for l in train.labels])
    return PairSet(train.images, groups, [by_index[c].en for c in group_ids], [by_index[c].zh for c in group_ids], templated=True)


def world_splits(emoji: EmojiData, cfg: DataConfig) -> tuple[ClassSplit | None, dict[str, Split]]:
    """The eval splits of the run's world. Today's world (no split_seed): the build's eval, transfer and unseen. The
    S/K/U world: `eval` and `transfer` on S, `known` on K, `unseen` on U and its strata (compress/data/world.py)."""
    evals = {k: v for k, v in emoji.splits.items() if k != "train"}
    if cfg.split_seed is None:
        return None, evals
    n_total = len(emoji.classes)
    seen = set(emoji.seen_ids)
    unseen = [c.index for c in emoji.classes if c.index not in seen]
    world = split_classes(emoji.seen_ids, unseen, n_total, cfg.student_fraction, cfg.split_seed)
    out = {"known": restrict(evals["eval"], world.teacher_only), "eval": restrict(evals["eval"], world.students),
           "transfer": restrict(evals["transfer"], world.students), "unseen": evals["unseen"]}
    if "val" in evals:  # fresh renders of S (`val`) and of K (`val_known`): where every choice is made
        out["val"] = restrict(evals["val"], world.students)
        out["val_known"] = restrict(evals["val"], world.teacher_only)
    strata = unseen_strata(emoji.classes, world.unseen, world.students + world.teacher_only)
    for name, ids in strata.items():
        out[f"unseen_{name}"] = restrict(evals["unseen"], ids, label_space=evals["unseen"].class_ids)
    return world, out


def build_run_emoji(cfg: DataConfig, seed: int) -> EmojiData:
    return build_emoji_dataset(
        cfg.cache_dir, image_size=cfg.image_size, train_renders=cfg.train_renders, eval_renders=cfg.eval_renders,
        unseen_fraction=cfg.unseen_fraction, seed=cfg.render_seed(seed), limit=cfg.limit, train_styles=cfg.train_styles,
        split_seed=cfg.split_seed,
    )


def load_run_data(cfg: DataConfig, seed: int) -> RunData:
    emoji = build_run_emoji(cfg, seed)
    names = emoji.names
    world, evals = world_splits(emoji, cfg)
    if cfg.kind == "emoji":
        if world is not None:
            keep = world.students if cfg.pairs == "students" else world.students + world.teacher_only
            train = restrict(emoji.splits["train"], keep)
            pairs = emoji_pairs(EmojiData(emoji.classes, {"train": train}, seen_ids=emoji.seen_ids))
            known = None
            if cfg.pairs == "students":
                k_train = restrict(emoji.splits["train"], world.teacher_only)
                known = emoji_pairs(EmojiData(emoji.classes, {"train": k_train}, seen_ids=emoji.seen_ids))
            return RunData(pairs, evals, names, world=world, known=known)
        return RunData(emoji_pairs(emoji), evals, names)
    if cfg.kind == "webdataset":
        from compress.data.webdataset import load_shards

        m, source = load_shards(cfg.shards, image_size=cfg.image_size), f"webdataset:{cfg.shards}"
    else:
        from compress.data.manifest import load_manifest

        m, source = load_manifest(cfg.manifest, image_size=cfg.image_size), f"manifest:{cfg.manifest}"
    # One group per row; a row with one language has None for the other (training masks it, see PairSet).
    return RunData(m.pairs(), evals, names, skipped=dict(m.skipped), source=source)
