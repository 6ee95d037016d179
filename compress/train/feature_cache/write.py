"""Writing a teacher-feature cache: run the teacher over every (sample, view) key and store its stage-1 targets.

The teacher and the training `PairSet` come in as arguments (the teacher may be a loader, called only when some
shard must be computed): loading them is the pipeline's job (`compress.pipeline.cache_teacher`). A build resumes:
shards already written for this cache that pass their checksum are kept, `manifest.json` is written last.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from compress.atomic import write_json
from compress.data.pairs import PairSet
from compress.errors import UserError
from compress.progress import log, progress_bar
from compress.prompts import LANGS
from compress.recipe import Recipe
from compress.recipe.schema import parse_cache_maps
from compress.teachers.base import ImageFeatures, Teacher
from compress.train.data import KeyCollate
from compress.train.distill import OnlineTargets, TargetShapes
from compress.train.feature_cache.fingerprint import (
    STAGE1_SEED_OFFSET,
    cache_fingerprint,
    file_sha256,
    fingerprint_hash,
    mismatch,
)
from compress.train.feature_cache.shards import (
    FORMAT,
    MANIFEST,
    NP_DTYPES,
    SHARD_BYTES,
    SHARD_NAME,
    VERSION,
    human_size,
    read_json,
    shard_name,
    shard_ok,
    stored_match,
    write_shard,
)


def _teacher_device(teacher: Teacher) -> torch.device:
    dev = getattr(teacher, "device", None)
    if dev is not None:
        return torch.device(dev)
    model = getattr(teacher, "model", None)
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def _fp16(t: torch.Tensor, what: str) -> np.ndarray:
    out = t.detach().to("cpu", torch.float16)
    if not torch.isfinite(out).all():
        raise UserError(f"teacher {what} features overflow fp16 (|x| > 65504) or are not finite; the cache stores fp16")
    return out.numpy()


def stored_maps(maps: list[torch.Tensor], cache_maps: str) -> list[torch.Tensor]:
    """The teacher's feature maps as a cache with `teacher.cache_maps` keeps them: all, average-pooled to G x G, or
    none."""
    mode, grid = parse_cache_maps(cache_maps) or ("full", 0)
    if mode == "none":
        return []
    if mode == "pooled":
        return [F.adaptive_avg_pool2d(m.float(), grid) for m in maps]
    return list(maps)


def _stored_shapes(shapes: TargetShapes, cache_maps: str) -> TargetShapes:
    """The target shapes a cache of `cache_maps` serves: no map channels when it keeps no maps (stage 1 then builds
    no map adapters)."""
    if cache_maps != "none":
        return shapes
    return TargetShapes(shapes.embed_dim, [], shapes.hidden_dim, list(shapes.text_layer_dims))


def _layout(shapes: TargetShapes, img: ImageFeatures, cache_maps: str = "full") -> dict[str, list]:
    """Per-row tensor layout {name: [dtype, shape]} of a cache, from the teacher's output for one key."""
    layout: dict[str, list] = {"image_embedding": ["F16", [shapes.embed_dim]]}
    for i, m in enumerate(stored_maps(img.maps, cache_maps)):
        layout[f"map_{i}"] = ["F16", list(m.shape[1:])]
    for lang in LANGS:
        layout[f"{lang}_embedding"] = ["F16", [shapes.embed_dim]]
        if shapes.hidden_dim:
            layout[f"{lang}_hidden"] = ["F16", [shapes.hidden_dim]]
        for i, dim in enumerate(shapes.text_layer_dims):  # teacher.text_layers, shallow to deep
            layout[f"{lang}_layer_{i}"] = ["F16", [dim]]
        layout[f"has_{lang}"] = ["U8", []]
    return layout


def _probe(targets: OnlineTargets, collate: KeyCollate, device: torch.device, cache_maps: str) -> dict[str, list]:
    return _layout(targets.shapes, targets.image(collate([(0, 0)]).to(device)), cache_maps)


def _compute_shard(targets: OnlineTargets, collate: KeyCollate, device: torch.device, samples: range, views: int,
                   batch_size: int, layout: dict[str, list], advance: Callable[[str], None],
                   cache_maps: str = "full") -> dict[str, np.ndarray]:
    keys = [(i, v) for i in samples for v in range(views)]
    out = {name: np.zeros((len(keys), *shape), dtype=NP_DTYPES[d]) for name, (d, shape) in layout.items()}
    n_maps = sum(1 for name in layout if name.startswith("map_"))
    for start in range(0, len(keys), batch_size):
        batch = collate(keys[start : start + batch_size]).to(device)
        rows = slice(start, start + len(batch))
        img = targets.image(batch)
        maps = stored_maps(img.maps, cache_maps)
        if len(maps) != n_maps:
            raise RuntimeError(f"teacher returned {len(maps)} feature maps to store, expected {n_maps}")
        out["image_embedding"][rows] = _fp16(img.embedding, "image embedding")
        for i, m in enumerate(maps):
            out[f"map_{i}"][rows] = _fp16(m, "feature map")
        has = {"en": batch.has_en.cpu().numpy(), "zh": batch.has_zh.cpu().numpy()}
        if has["en"].any() or has["zh"].any():
            txt = targets.text(batch)  # present_captions order: the English ones present, then the Chinese ones
            first = 0
            for lang in LANGS:
                where = start + np.flatnonzero(has[lang])
                part = slice(first, first + len(where))
                out[f"has_{lang}"][where] = 1
                out[f"{lang}_embedding"][where] = _fp16(txt.embedding[part], "text embedding")
                if f"{lang}_hidden" in out:
                    out[f"{lang}_hidden"][where] = _fp16(txt.hidden[part], "text hidden")
                for i, layer in enumerate(txt.layers):
                    out[f"{lang}_layer_{i}"][where] = _fp16(layer[part], "text layer")
                first += len(where)
        advance(f"{len(batch)} views")
    return out


def estimate_bytes(row_bytes: int, views: int, samples: int, shards: int) -> int:
    """Disk a write of `samples` x `views` rows in `shards` files takes: the features plus each shard's safetensors
    header and the manifest, with 1% slack (a shard is written beside its final name, then renamed: no copy)."""
    if not samples:
        return 0
    return int(row_bytes * views * samples * 1.01) + shards * (16 << 10) + (64 << 10)


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem that holds `folder` (or would: its nearest existing parent)."""
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def write_cache(recipe: Recipe, teacher: Teacher | Callable[[], Teacher], pairs: PairSet, folder: str | os.PathLike,
                views: int | None = None, shard_size: int | None = None, batch_size: int = 64,
                identity: dict | None = None, tokenizer=None, split: "Split | None" = None) -> dict:
    """Compute and store the teacher's stage-1 targets of every (sample, view) key; returns the manifest.

    Resumes: shards already in `folder` that belong to this cache and pass their checksum are kept, the others are
    (re)computed, and `manifest.json` is written last. `teacher` may be a zero-argument function that loads it, called
    only if some shard must be computed. `shard_size`: samples per shard (default: about 256 MiB per file).
    `identity`: the teacher's identity when it is not the teacher the recipe names (see `cache_fingerprint`).
    `tokenizer`: the run's student tokenizer: the teacher reads each caption cut to its window, as online.
    `split`: this process's share (default: accelerate's processes, one when not launched): process r computes the
    shards i with i % world == r, all wait, and process 0 alone writes the one manifest that covers them all (the
    others return it once written; {} if it is not there)."""
    split = split or Split.from_accelerate()
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"teacher cache {str(folder)!r} is a file; pass a folder")
    views = int(views if views is not None else recipe.teacher.cache_views)
    if not 1 <= views <= 1024:
        raise UserError(f"views: {views} is out of range; use 1..1024 augmented views per sample")
    if shard_size is not None and shard_size < 1:
        raise UserError(f"shard_size: {shard_size} must be at least 1 sample per shard")
    if len(pairs) == 0:
        raise UserError("the training data is empty; there is nothing to cache")
    cache_maps = recipe.teacher.cache_maps
    match = cache_fingerprint(recipe, pairs, views, identity, tokenizer)
    fp = fingerprint_hash(match)
    if folder.is_dir():
        from compress.readers import claim_outputs

        # a manifest.json that is not a teacher cache's is a user's file: refused, never overwritten
        claim_outputs(folder, (MANIFEST,), lambda doc: isinstance(doc, dict) and doc.get("format") == FORMAT,
                      "cache-teacher")
        stored = stored_match(folder)
        if stored is not None and (why := mismatch(stored, match)):
            raise UserError(f"teacher cache folder {str(folder)!r} already holds features for another setup ({why}); "
                            "delete it or choose another folder (--out)")
        if split.rank == 0:
            for p in folder.iterdir():  # temp files of a killed write (before any process starts a new one)
                if p.name.startswith(".shard-") or p.name.startswith(f".{MANIFEST}."):
                    p.unlink(missing_ok=True)
    split.barrier()  # every process, whether or not the folder existed yet

    loaded: list[Teacher] = []

    def get_teacher() -> Teacher:
        if not loaded:
            loaded.append(teacher() if callable(teacher) and not hasattr(teacher, "encode_image") else teacher)
            t = loaded[0]
            if identity is None and match["teacher"]["kind"] == "hf":
                want = (match["teacher"]["map_layers"], match["teacher"]["text_layer"])
                have = (list(getattr(t, "map_layers", want[0])), getattr(t, "text_layer", want[1]))
                if have != want:
                    raise ValueError(f"teacher taps {have} differ from recipe.teacher's {want}")
            if identity is None:
                want_layers = match["teacher"].get("text_layers")
                have_layers = getattr(t, "text_layers", None)
                if have_layers != want_layers:
                    raise ValueError(f"teacher text_layers {have_layers} differ from recipe.teacher's {want_layers}")
        return loaded[0]

    # Shapes: from the manifest of an earlier write when there is one; else from the teacher's output for one key.
    def collate(keys: list[tuple[int, int]]):  # the teacher's own view of each crop, as online stage 1 gives it
        if not made:
            made.append(KeyCollate(pairs, recipe.seed + STAGE1_SEED_OFFSET, tokenizer,
                                   getattr(get_teacher(), "train_input", None)))
        return made[0](keys)

    made: list[KeyCollate] = []
    old = read_json(folder / MANIFEST)
    if old is not None and old.get("fingerprint") == fp and old.get("version") == VERSION:
        target = TargetShapes(**old["shapes"])
        layout = {k: [v["dtype"], v["shape"]] for k, v in old["tensors"].items()}
        shard_size = shard_size or old["samples_per_shard"]
        targets = None
    else:
        targets = OnlineTargets(get_teacher())
        target = _stored_shapes(targets.shapes, cache_maps)
        layout = _probe(targets, collate, _teacher_device(get_teacher()), cache_maps)
    row_bytes = sum((2 if d == "F16" else 1) * int(np.prod(shape)) for d, shape in layout.values())
    shard_size = shard_size or max(1, SHARD_BYTES // (views * row_bytes))
    n = len(pairs)
    ranges = [range(lo, min(n, lo + shard_size)) for lo in range(0, n, shard_size)]
    names = [shard_name(i) for i in range(len(ranges))]

    kept = [(folder / name).is_file() and shard_ok(folder / name, fp, (r.start * views, r.stop * views), layout)
            for name, r in zip(names, ranges)]
    batches = [-(-len(r) * views // batch_size) for r in ranges]
    todo = [i for i, k in enumerate(kept) if not k]
    mine = [i for i in todo if i % split.world == split.rank]
    total_bytes = row_bytes * n * views
    need = estimate_bytes(row_bytes, views, sum(len(ranges[i]) for i in todo), len(todo))
    free = free_bytes(folder)
    log(f"teacher cache {folder}: {human_size(row_bytes)} per view x {views} views x {n} samples = "
        f"~{human_size(total_bytes)} of fp16 features in {len(ranges)} shard(s); {len(ranges) - len(todo)} already "
        f"written, {len(todo)} to compute (~{human_size(need)}); {human_size(free)} free on its disk")
    if need > free:
        raise UserError(f"teacher cache {str(folder)!r} needs ~{human_size(need)} more ({human_size(row_bytes)} per view x "
                        f"{views} views x {n} samples) but its disk has {human_size(free)} free; free space, choose a "
                        "folder on a larger disk (--out), or cache fewer views (--views)")
    metadata_base = {"format": FORMAT, "version": str(VERSION), "fingerprint": fp, "match": json.dumps(match, sort_keys=True)}
    entries: dict[int, dict] = {}
    for i in range(len(ranges)):
        if kept[i]:
            entries[i] = {"bytes": (folder / names[i]).stat().st_size, "sha256": file_sha256(folder / names[i])}
    if mine:
        folder.mkdir(parents=True, exist_ok=True)
        device = _teacher_device(get_teacher())
        if targets is None:  # shapes came from the manifest: the teacher must still produce them
            targets = OnlineTargets(get_teacher())
            if (_probe(targets, collate, device, cache_maps) != layout
                    or vars(_stored_shapes(targets.shapes, cache_maps)) != vars(target)):
                raise UserError(f"teacher cache {str(folder)!r}: the teacher's output shapes differ from the cache's; "
                                "delete the folder and rebuild it")
        done = sum(b for i, b in enumerate(batches) if kept[i] or i not in mine)
        with progress_bar("cache teacher features", sum(batches), completed=done) as advance:
            for i in mine:
                arrays = _compute_shard(targets, collate, device, ranges[i], views, batch_size, layout, advance,
                                        cache_maps)
                r = ranges[i]
                size, sha = write_shard(folder / names[i], arrays,
                                         {**metadata_base, "rows": f"{r.start * views}:{r.stop * views}"})
                entries[i] = {"bytes": size, "sha256": sha}
    split.barrier()  # every process's shards are on disk
    if split.rank != 0:  # process 0 checks them all and writes the manifest
        split.barrier()
        return read_json(folder / MANIFEST) or {}
    for i in range(len(ranges)):  # the shards the other processes wrote
        if i not in entries:
            if not shard_ok(folder / names[i], fp, (ranges[i].start * views, ranges[i].stop * views), layout):
                raise UserError(f"teacher cache {str(folder)!r}: {names[i]} is missing or damaged after every process "
                                "finished; rerun `dcclip-compress cache-teacher RECIPE` (it resumes)")
            entries[i] = {"bytes": (folder / names[i]).stat().st_size, "sha256": file_sha256(folder / names[i])}
    manifest = {
        "format": FORMAT, "version": VERSION, "fingerprint": fp, "match": match,
        "samples": n, "views": views, "rows": n * views, "row_order": "index * views + view",
        "samples_per_shard": shard_size,
        "maps": cache_maps,  # full | pooled:G | none (teacher.cache_maps)
        "shapes": {"embed_dim": target.embed_dim, "map_channels": list(target.map_channels), "hidden_dim": target.hidden_dim,
                   **({"text_layer_dims": list(target.text_layer_dims)} if target.text_layer_dims else {})},
        "tensors": {k: {"dtype": d, "shape": list(shape)} for k, (d, shape) in layout.items()},
        "shards": [{"file": names[i], "samples": [r.start, r.stop], "rows": [r.start * views, r.stop * views], **entries[i]}
                   for i, r in enumerate(ranges)],
        "bytes": sum(e["bytes"] for e in entries.values()),
    }
    for p in folder.iterdir():  # shards of an earlier layout
        if SHARD_NAME.match(p.name) and p.name not in names:
            p.unlink()
    if manifest != old:
        write_json(folder / MANIFEST, manifest)
    split.barrier()
    return manifest


@dataclass(frozen=True)
class Split:
    """This process's place among the processes that build one cache together."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @classmethod
    def from_accelerate(cls) -> "Split":
        """Under `accelerate launch` (or torchrun), accelerate's processes; otherwise this process alone."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState()
        return cls(state.process_index, state.num_processes, state.wait_for_everyone)
