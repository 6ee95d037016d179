"""What a teacher-feature cache must agree on with a run for its targets to be that run's stage-1 targets.

The match fingerprint: teacher identity and taps (from the recipe alone, so a cache can be checked without loading
the teacher), augmentation seed, data config, views, sample count and hash, training code version and a probe of the
augmentation code. `mismatch` names the first thing that differs, for one-line refusals.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from compress.data.pairs import PairSet
from compress.atomic import sha256_file
from compress.errors import UserError
from compress.home import cache_dir
from compress.prompts import LANGS
from compress.recipe import TRAINING_VERSION, Recipe
from compress.train.data import view_augment_params, view_caption

STAGE1_SEED_OFFSET = 0  # stage 1 trains with seed recipe.seed + 0 (compress.pipeline.state.loop_context)

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """sha256 of a file, memoised per process by (real path, size, mtime). A file that is a symlink into a Hugging
    Face cache's `blobs/` folder is named by its content hash already (sha256 for LFS files, git sha1 otherwise)."""
    path = Path(path)
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", real.name):
        return real.name
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(real, chunk)
    return _FILE_HASHES[key]


def folder_sha256(folder: Path) -> str:
    """Content hash of a checkpoint folder: every top-level, non-hidden file (config, weights, tokenizer, processor)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        h.update(f"{p.name}\0{p.stat().st_size}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def teacher_identity(recipe: Recipe) -> dict:
    """What fixes the teacher's outputs, from the recipe alone (the teacher need not be loaded): which checkpoint
    (content hash of a local folder, the cached revision of a hub id, or the reference teacher's recipe
    fingerprint), its taps (map and text layers, resolved against the checkpoint's config) and its dtype.
    `text_layers` is there only when the recipe sets it, so caches from before that key keep their fingerprint."""
    from compress.teachers.base import resolve_text_layers

    cfg = recipe.teacher
    if cfg.kind == "none":
        raise UserError("teacher.kind is 'none': there is no teacher whose features could be cached")
    if cfg.kind == "reference":
        from compress.teachers.reference import reference_recipe_for

        # The reference teacher as a student run trains it (the run's class subset, held-out split and seed); its own
        # cache is keyed by this recipe's fingerprint too.
        t = reference_recipe_for(recipe)
        identity = {"kind": "reference", "recipe": cfg.recipe, "checkpoint": f"recipe:{t.name}-{t.fingerprint()}", "taps": "all"}
        if cfg.text_layers is not None:
            from students.registry import check_text_arch

            text = t.students.text
            depth = int(text.spec["layers"]) if text.spec else check_text_arch(text.arch).layers
            identity["text_layers"] = resolve_text_layers(cfg.text_layers, depth)
        return identity
    from compress.teachers.hf import resolve_map_layers, resolve_text_layer
    from compress.teachers.hub import cached_revision, locate, tower_depths

    spec = cfg.spec
    source, local = locate(spec)
    checkpoint = f"sha256:{folder_sha256(Path(source))}" if local else f"hub:{spec}@{cached_revision(spec)}"
    vision_layers, text_layers = tower_depths(source, spec)
    identity = {
        "kind": "hf", "spec": spec, "checkpoint": checkpoint,
        "map_layers": resolve_map_layers(cfg.map_layers, vision_layers),
        "text_layer": resolve_text_layer(cfg.text_layer, text_layers),
        "dtype": cfg.dtype,
    }
    if cfg.text_layers is not None:
        identity["text_layers"] = resolve_text_layers(cfg.text_layers, text_layers)
    return identity


def samples_digest(pairs: PairSet) -> dict:
    """Count and sha256 of the training sample list: images, groups, captions (what KeyCollate reads)."""
    h = hashlib.sha256()
    if torch.is_tensor(pairs.images):
        images = pairs.images.contiguous()
        h.update(f"{tuple(images.shape)} {images.dtype}\n".encode())
        h.update(memoryview(images.numpy()).cast("B"))
    else:  # a corpus on disk (compress/data/store.py): its files and places, not its pixels
        from compress.data.store import images_digest

        h.update(f"{tuple(pairs.images.shape)} lazy {images_digest(pairs.images)}\n".encode())
    h.update(pairs.groups.to(torch.int64).contiguous().numpy().tobytes())
    more = {lang: {str(g): list(c) for g, c in sorted(m.items())} for lang, m in sorted(pairs.more.items())}
    h.update(json.dumps([list(pairs.en), list(pairs.zh), pairs.templated, more], ensure_ascii=False).encode())
    return {"count": len(pairs), "groups": pairs.num_groups, "sha256": h.hexdigest()}


def augmentation_probe(pairs: PairSet, seed: int) -> str:
    """Hash of the augmentation parameters and captions of a few keys: catches a change to the code that decides
    them even where TRAINING_VERSION was not bumped."""
    keys = [(i, v) for i in range(min(4, len(pairs))) for v in range(3)]
    h = hashlib.sha256(view_augment_params(seed, keys).numpy().tobytes())
    h.update(json.dumps([[view_caption(pairs, seed, i, v, lang) for lang in LANGS] for i, v in keys], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def cache_fingerprint(recipe: Recipe, pairs: PairSet, views: int | None = None, identity: dict | None = None,
                      tokenizer=None) -> dict:
    """Everything a cache must agree on with a run for its targets to be that run's stage-1 targets.

    `identity` describes the teacher when it is not the one the recipe names (benchmarks, tests); by default it
    comes from the recipe (`teacher_identity`). `views` defaults to `teacher.cache_views`. `tokenizer`: the run's
    student tokenizer, whose window cuts the captions the teacher reads; it enters the fingerprint only when it
    cuts some caption of `pairs` (so caches of data that fits keep their fingerprint)."""
    seed = recipe.seed + STAGE1_SEED_OFFSET
    match = {
        "teacher": identity if identity is not None else teacher_identity(recipe),
        "seed": seed,
        "views": int(views if views is not None else recipe.teacher.cache_views),
        "data": recipe.data.model_dump(exclude={"cache_dir", "eval_renders", "eval_manifest"}
                                       | ({"split_seed", "student_fraction", "pairs"} if recipe.data.split_seed is None
                                          else set())),  # today's world: caches from before the S/K/U keys stay valid
        "samples": samples_digest(pairs),
        "training_version": TRAINING_VERSION,
        "augmentation": augmentation_probe(pairs, seed),
    }
    from compress.data.store import CROP_MARGIN, crops_from_disk

    if tokenizer is not None and (cut := text_window_digest(pairs, tokenizer)):
        match["text_window"] = cut

    if crops_from_disk(pairs.images):  # a corpus on disk: the teacher saw its own view of each random crop
        match["crop"] = {"margin": round(CROP_MARGIN, 6)}
    if recipe.teacher.cache_maps != "full":  # caches from before teacher.cache_maps (full maps) keep their fingerprint
        match["maps"] = recipe.teacher.cache_maps
    return json.loads(json.dumps(match))  # JSON-normalised, so it compares equal to what a manifest holds


def text_window_digest(pairs: PairSet, tokenizer) -> dict | None:
    """None when the student's window keeps every caption `pairs` can produce whole; else what fixes the cuts."""
    from compress.tokenizer import tokenizer_corpus

    texts = tokenizer_corpus(pairs)
    if texts == tokenizer.window(texts):
        return None
    vocab = json.dumps(sorted(tokenizer.tokenizer.get_vocab().items()), ensure_ascii=False).encode()
    return {"context_length": tokenizer.context_length, "vocab_sha256": hashlib.sha256(vocab).hexdigest()[:16]}


def fingerprint_hash(match: dict) -> str:
    """Short hash of a match fingerprint: names the cache in every shard and in the default folder."""
    return hashlib.sha256(json.dumps(match, sort_keys=True).encode()).hexdigest()[:16]


def default_folder(recipe: Recipe, match: dict) -> Path:
    """`teacher.cache` when the recipe sets it, else .cache/teacher-features/<recipe name>-<fingerprint>."""
    return Path(recipe.teacher.cache) if recipe.teacher.cache else cache_dir("teacher-features") / f"{recipe.name}-{fingerprint_hash(match)}"


# How `mismatch` names a top-level fingerprint key (`teacher.*` and `data.*` are named by their own path).
LABELS = {
    "seed": "the augmentation seed (recipe seed)", "views": "views per sample (teacher.cache_views)",
    "samples": "the training sample list", "training_version": "the training code version (TRAINING_VERSION)",
    "augmentation": "the augmentation/caption code", "maps": "the stored feature maps (teacher.cache_maps)",
    "text_window": "the student's text window (students.text), which cuts the teacher's captions",
}


def _short(value: Any) -> str:
    text = "(absent)" if value is _MISSING else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 70 else text[:67] + "..."


_MISSING = object()


def _first_difference(have: Any, want: Any, path: tuple = ()) -> tuple[tuple, Any, Any] | None:
    if isinstance(have, dict) and isinstance(want, dict):
        for k in list(want) + [k for k in have if k not in want]:
            if k not in have or k not in want:
                return path + (k,), have.get(k, _MISSING), want.get(k, _MISSING)
            found = _first_difference(have[k], want[k], path + (k,))
            if found:
                return found
        return None
    return None if have == want else (path, have, want)


def mismatch(have: dict, want: dict) -> str | None:
    """None when a cache's fingerprint `have` equals `want`, else what differs first, for a one-line message."""
    found = _first_difference(have, want)
    if found is None:
        return None
    path, a, b = found
    head = path[0] if path else "fingerprint"
    if head in ("teacher", "data"):
        label = ".".join(str(p) for p in path)
    elif head == "samples" and len(path) > 1 and path[1] == "count":
        label = "the number of training samples"
    else:
        label = LABELS.get(head, ".".join(str(p) for p in path))
    if head == "samples" and not (len(path) > 1 and path[1] == "count"):
        return f"{label} differs (same data config, other images or captions)"
    return f"{label} is {_short(a)} in the cache but {_short(b)} for this recipe"
