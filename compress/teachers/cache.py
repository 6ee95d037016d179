"""Teacher-feature cache: the teacher's stage-1 targets for K augmented views of every training sample, on disk.

MobileCLIP's "reinforced dataset" idea: the teacher runs once, ahead of training (`dcclip-compress cache-teacher
RECIPE`), and stage 1 then reads its targets from disk (`CachedTargets`) instead of keeping the teacher in memory and
running it on every batch. Training samples are addressed by keys `(index, view)`, and `KeyCollate` turns a key into
the same augmented pixels and captions every time, so the cache holds exactly what training will see as long as the
plan draws views from `range(K)` (`LoopContext(views=K)`).

Layout of a cache folder:
- `shard-00000.safetensors`, ...: one file per run of samples, all K views of each; row `index * K + view`. Tensors
  (fp16 unless noted): `image_embedding` (R, D), `map_<i>` (R, C_i, h_i, w_i), and per language `<lang>_embedding`
  (R, D), `<lang>_hidden` (R, H) and `has_<lang>` (R,) uint8 (rows without a caption in that language are zeros).
  Each shard's metadata holds the cache's match fingerprint, its row range and the sha256 of its data section, so a
  shard can be checked on its own; each is written atomically (temp file, then rename), so one that exists is whole.
- `manifest.json`, written last: format version, the match fingerprint (teacher identity and taps, augmentation
  seed, data config, views, sample count and hash, training code version), target shapes, tensor shapes/dtypes,
  per-shard row ranges, sizes and sha256. No manifest = an unfinished cache; `write_cache` resumes it.

Checks: opening a cache (`CachedTargets`) compares the fingerprint with the recipe's, and the size and header of
every shard (cheap, whatever the cache size); each shard's sha256 is checked the first time training reads from it
(`verify="lazy"`, the default: the whole file is read once, which also warms the page cache for the reads that
follow), or all of them up front (`verify="full"`, and `verify_cache`). `write_cache` checks every shard it keeps.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from compress.atomic import atomic_path, write_json
from compress.data.pairs import PairSet
from compress.errors import UserError
from compress.progress import log, progress_bar
from compress.recipe.schema import TRAINING_VERSION, Recipe
from compress.teachers.base import ImageFeatures, Teacher, TextFeatures
from compress.train.data import Batch, KeyCollate, view_augment_params, view_caption
from compress.train.distill import OnlineTargets, TargetShapes

FORMAT = "dcclip-teacher-cache"
VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_ROOT = Path(".cache/teacher-features")
STAGE1_SEED_OFFSET = 0  # stage 1 trains with seed recipe.seed + 0 (compress.pipeline.stages.loop_context)
SHARD_BYTES = 256 << 20  # default shard size: about this many bytes of features per file
LANGS = ("en", "zh")
REBUILD = "rebuild it with `dcclip-compress cache-teacher RECIPE`"
RESUME = "finish it with `dcclip-compress cache-teacher RECIPE` (it resumes)"
_SHARD = re.compile(r"^shard-(\d{5,})\.safetensors$")
_NP_DTYPES = {"F16": np.float16, "U8": np.uint8}
_DTYPE_NAMES = {np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8"}


# ------------------------------------------------------------------------------------------------ fingerprint
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
        h = hashlib.sha256()
        with real.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
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
    fingerprint), its taps (map and text layers, resolved against the checkpoint's config) and its dtype."""
    cfg = recipe.teacher
    if cfg.kind == "none":
        raise UserError("teacher.kind is 'none': there is no teacher whose features could be cached")
    if cfg.kind == "reference":
        from compress.recipe.schema import load_recipe

        # As compress.pipeline.run.load_teacher / ensure_reference_teacher build it: the student run's class subset,
        # held-out split and seed; the reference teacher's own cache is keyed by this recipe's fingerprint too.
        t = load_recipe(cfg.recipe)
        same_data = {k: getattr(recipe.data, k) for k in ("unseen_fraction", "limit", "cache_dir")}
        t = t.model_copy(update={"data": t.data.model_copy(update=same_data), "seed": recipe.seed})
        return {"kind": "reference", "recipe": cfg.recipe, "checkpoint": f"recipe:{t.name}-{t.fingerprint()}", "taps": "all"}
    from transformers import AutoConfig

    from compress.teachers.hf import resolve_map_layers, resolve_text_layer

    spec = cfg.spec
    folder = Path(spec).expanduser()
    if folder.is_dir():
        checkpoint = f"sha256:{folder_sha256(folder)}"
        source = str(folder)
    else:
        from huggingface_hub import try_to_load_from_cache

        from compress.teachers.hf import _could_be_repo_id

        if not _could_be_repo_id(spec):
            raise UserError(f"teacher folder {spec!r} does not exist; pass an existing checkpoint folder or a hub id")
        try:
            found = try_to_load_from_cache(spec, "config.json")
        except Exception:  # noqa: BLE001 - an odd cache layout counts as not downloaded
            found = None
        if not isinstance(found, str):
            raise UserError(
                f"teacher {spec!r} is neither a local folder nor downloaded to the Hugging Face cache, so the teacher "
                f"cache cannot be matched to it; download it (`hf download {spec}`) or pass its local folder"
            )
        checkpoint, source = f"hub:{spec}@{Path(found).parent.name}", spec
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        vision_layers = int(config.vision_config.num_hidden_layers)
        text_layers = int(config.text_config.num_hidden_layers)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the user's folder
        raise UserError(f"teacher {spec!r}: cannot read its config.json ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return {
        "kind": "hf", "spec": spec, "checkpoint": checkpoint,
        "map_layers": resolve_map_layers(cfg.map_layers, vision_layers),
        "text_layer": resolve_text_layer(cfg.text_layer, text_layers),
        "dtype": cfg.dtype,
    }


def samples_digest(pairs: PairSet) -> dict:
    """Count and sha256 of the training sample list: images, groups, captions (what KeyCollate reads)."""
    h = hashlib.sha256()
    images = pairs.images.contiguous()
    h.update(f"{tuple(images.shape)} {images.dtype}\n".encode())
    h.update(memoryview(images.numpy()).cast("B"))
    h.update(pairs.groups.to(torch.int64).contiguous().numpy().tobytes())
    more = {lang: {str(g): list(c) for g, c in sorted(m.items())} for lang, m in sorted(pairs.more.items())}
    h.update(json.dumps([pairs.en, pairs.zh, pairs.templated, more], ensure_ascii=False).encode())
    return {"count": len(pairs), "groups": pairs.num_groups, "sha256": h.hexdigest()}


def augmentation_probe(pairs: PairSet, seed: int) -> str:
    """Hash of the augmentation parameters and captions of a few keys: catches a change to the code that decides
    them even where TRAINING_VERSION was not bumped."""
    keys = [(i, v) for i in range(min(4, len(pairs))) for v in range(3)]
    h = hashlib.sha256(view_augment_params(seed, keys).numpy().tobytes())
    h.update(json.dumps([[view_caption(pairs, seed, i, v, lang) for lang in LANGS] for i, v in keys], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def cache_fingerprint(recipe: Recipe, pairs: PairSet, views: int | None = None, identity: dict | None = None) -> dict:
    """Everything a cache must agree on with a run for its targets to be that run's stage-1 targets.

    `identity` describes the teacher when it is not the one the recipe names (benchmarks, tests); by default it
    comes from the recipe (`teacher_identity`). `views` defaults to `teacher.cache_views`."""
    seed = recipe.seed + STAGE1_SEED_OFFSET
    match = {
        "teacher": identity if identity is not None else teacher_identity(recipe),
        "seed": seed,
        "views": int(views if views is not None else recipe.teacher.cache_views),
        "data": recipe.data.model_dump(exclude={"cache_dir", "eval_renders", "eval_manifest"}),
        "samples": samples_digest(pairs),
        "training_version": TRAINING_VERSION,
        "augmentation": augmentation_probe(pairs, seed),
    }
    return json.loads(json.dumps(match))  # JSON-normalised, so it compares equal to what a manifest holds


def fingerprint_hash(match: dict) -> str:
    return hashlib.sha256(json.dumps(match, sort_keys=True).encode()).hexdigest()[:16]


def default_folder(recipe: Recipe, match: dict) -> Path:
    """`teacher.cache` when the recipe sets it, else .cache/teacher-features/<recipe name>-<fingerprint>."""
    return Path(recipe.teacher.cache) if recipe.teacher.cache else DEFAULT_ROOT / f"{recipe.name}-{fingerprint_hash(match)}"


_LABELS = {
    "seed": "the augmentation seed (recipe seed)", "views": "views per sample (teacher.cache_views)",
    "samples": "the training sample list", "training_version": "the training code version (TRAINING_VERSION)",
    "augmentation": "the augmentation/caption code",
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
        label = _LABELS.get(head, ".".join(str(p) for p in path))
    if head == "samples" and not (len(path) > 1 and path[1] == "count"):
        return f"{label} differs (same data config, other images or captions)"
    return f"{label} is {_short(a)} in the cache but {_short(b)} for this recipe"


# ------------------------------------------------------------------------------------------------ shard files
def _header(path: Path) -> tuple[dict, int]:
    """(safetensors header, byte offset of the data section)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("too short for a safetensors file")
        n = int.from_bytes(head, "little")
        if n > 100 << 20:
            raise ValueError("header length is implausible")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("truncated header")
    return json.loads(raw), 8 + n


def _write_shard(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[int, str]:
    """Write a safetensors file (sorted tensor names, header padded to 8 bytes) atomically, byte-for-byte the same
    for the same arrays; returns (size, sha256 of the file). The data section's sha256 goes into the metadata."""
    names = sorted(arrays)
    data_hash = hashlib.sha256()
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        a = np.ascontiguousarray(arrays[name])
        arrays[name] = a
        header[name] = {"dtype": _DTYPE_NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        data_hash.update(memoryview(a).cast("B"))
    header = {"__metadata__": {**metadata, "data_sha256": data_hash.hexdigest()}, **header}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    file_hash = hashlib.sha256()
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            for block in (len(raw).to_bytes(8, "little"), raw):
                f.write(block)
                file_hash.update(block)
            for name in names:
                view = memoryview(arrays[name]).cast("B")
                f.write(view)
                file_hash.update(view)
            f.flush()
            os.fsync(f.fileno())
    return 8 + len(raw) + offset, file_hash.hexdigest()


def _shard_ok(path: Path, fp: str, rows: tuple[int, int], layout: dict[str, list]) -> bool:
    """A shard written by this cache (fingerprint, rows and tensor layout) whose data section checks out."""
    try:
        header, start = _header(path)
        meta = header.get("__metadata__", {})
        if meta.get("fingerprint") != fp or meta.get("rows") != f"{rows[0]}:{rows[1]}":
            return False
        n = rows[1] - rows[0]
        for name, (dtype, shape) in layout.items():
            info = header.get(name)
            if info is None or info["dtype"] != dtype or info["shape"] != [n, *shape]:
                return False
        end = max(info["data_offsets"][1] for k, info in header.items() if k != "__metadata__")
        if path.stat().st_size != start + end:
            return False
        h = hashlib.sha256()
        with path.open("rb") as f:
            f.seek(start)
            while block := f.read(8 << 20):
                h.update(block)
        return h.hexdigest() == meta.get("data_sha256")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _stored_match(folder: Path) -> dict | None:
    """The fingerprint the cache files already in `folder` were written for (manifest, else any shard), or None."""
    manifest = folder / MANIFEST
    try:
        if manifest.is_file():
            return json.loads(manifest.read_text(encoding="utf-8"))["match"]
        for p in sorted(folder.iterdir()):
            if _SHARD.match(p.name):
                return json.loads(_header(p)[0]["__metadata__"]["match"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


# ------------------------------------------------------------------------------------------------ writing
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


def _layout(shapes: TargetShapes, img: ImageFeatures) -> dict[str, list]:
    """Per-row tensor layout {name: [dtype, shape]} of a cache, from the teacher's output for one key."""
    layout: dict[str, list] = {"image_embedding": ["F16", [shapes.embed_dim]]}
    for i, m in enumerate(img.maps):
        layout[f"map_{i}"] = ["F16", list(m.shape[1:])]
    for lang in LANGS:
        layout[f"{lang}_embedding"] = ["F16", [shapes.embed_dim]]
        if shapes.hidden_dim:
            layout[f"{lang}_hidden"] = ["F16", [shapes.hidden_dim]]
        layout[f"has_{lang}"] = ["U8", []]
    return layout


def _probe(targets: OnlineTargets, collate: KeyCollate, device: torch.device) -> dict[str, list]:
    return _layout(targets.shapes, targets.image(collate([(0, 0)]).to(device)))


def _compute_shard(targets: OnlineTargets, collate: KeyCollate, device: torch.device, samples: range, views: int,
                   batch_size: int, layout: dict[str, list], advance: Callable[[str], None]) -> dict[str, np.ndarray]:
    keys = [(i, v) for i in samples for v in range(views)]
    out = {name: np.zeros((len(keys), *shape), dtype=_NP_DTYPES[d]) for name, (d, shape) in layout.items()}
    n_maps = sum(1 for name in layout if name.startswith("map_"))
    for start in range(0, len(keys), batch_size):
        batch = collate(keys[start : start + batch_size]).to(device)
        rows = slice(start, start + len(batch))
        img = targets.image(batch)
        if len(img.maps) != n_maps:
            raise RuntimeError(f"teacher returned {len(img.maps)} feature maps, expected {n_maps}")
        out["image_embedding"][rows] = _fp16(img.embedding, "image embedding")
        for i, m in enumerate(img.maps):
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
                first += len(where)
        advance(f"{len(batch)} views")
    return out


def write_cache(recipe: Recipe, teacher: Teacher | Callable[[], Teacher], pairs: PairSet, folder: str | os.PathLike,
                views: int | None = None, shard_size: int | None = None, batch_size: int = 64,
                identity: dict | None = None) -> dict:
    """Compute and store the teacher's stage-1 targets of every (sample, view) key; returns the manifest.

    Resumes: shards already in `folder` that belong to this cache and pass their checksum are kept, the others are
    (re)computed, and `manifest.json` is written last. `teacher` may be a zero-argument function that loads it, called
    only if some shard must be computed. `shard_size`: samples per shard (default: about 256 MiB per file).
    `identity`: the teacher's identity when it is not the teacher the recipe names (see `cache_fingerprint`)."""
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
    match = cache_fingerprint(recipe, pairs, views, identity)
    fp = fingerprint_hash(match)
    if folder.is_dir():
        stored = _stored_match(folder)
        if stored is not None and (why := mismatch(stored, match)):
            raise UserError(f"teacher cache folder {str(folder)!r} already holds features for another setup ({why}); "
                            "delete it or choose another folder (--out)")
        for p in folder.iterdir():  # temp files of a killed write
            if p.name.startswith(".shard-") or p.name.startswith(f".{MANIFEST}."):
                p.unlink(missing_ok=True)

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
        return loaded[0]

    # Shapes: from the manifest of an earlier write when there is one; else from the teacher's output for one key.
    collate = KeyCollate(pairs, recipe.seed + STAGE1_SEED_OFFSET, None)
    old = _read_json(folder / MANIFEST)
    if old is not None and old.get("fingerprint") == fp and old.get("version") == VERSION:
        target = TargetShapes(**old["shapes"])
        layout = {k: [v["dtype"], v["shape"]] for k, v in old["tensors"].items()}
        shard_size = shard_size or old["samples_per_shard"]
        targets = None
    else:
        targets = OnlineTargets(get_teacher())
        target, layout = targets.shapes, _probe(targets, collate, _teacher_device(get_teacher()))
    row_bytes = sum((2 if d == "F16" else 1) * int(np.prod(shape)) for d, shape in layout.values())
    shard_size = shard_size or max(1, SHARD_BYTES // (views * row_bytes))
    n = len(pairs)
    ranges = [range(lo, min(n, lo + shard_size)) for lo in range(0, n, shard_size)]
    names = [f"shard-{i:05d}.safetensors" for i in range(len(ranges))]

    kept = [(folder / name).is_file() and _shard_ok(folder / name, fp, (r.start * views, r.stop * views), layout)
            for name, r in zip(names, ranges)]
    batches = [-(-len(r) * views // batch_size) for r in ranges]
    todo = [i for i, k in enumerate(kept) if not k]
    total_bytes = row_bytes * n * views
    log(f"teacher cache {folder}: {n} samples x {views} views in {len(ranges)} shard(s), ~{human_size(total_bytes)} "
        f"of fp16 features; {len(ranges) - len(todo)} shard(s) already written, {len(todo)} to compute")
    metadata_base = {"format": FORMAT, "version": str(VERSION), "fingerprint": fp, "match": json.dumps(match, sort_keys=True)}
    entries: dict[int, dict] = {}
    for i in range(len(ranges)):
        if kept[i]:
            entries[i] = {"bytes": (folder / names[i]).stat().st_size, "sha256": file_sha256(folder / names[i])}
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        device = _teacher_device(get_teacher())
        if targets is None:  # shapes came from the manifest: the teacher must still produce them
            targets = OnlineTargets(get_teacher())
            if _probe(targets, collate, device) != layout or vars(targets.shapes) != vars(target):
                raise UserError(f"teacher cache {str(folder)!r}: the teacher's output shapes differ from the cache's; "
                                "delete the folder and rebuild it")
        done = sum(b for i, b in enumerate(batches) if kept[i])
        with progress_bar("cache teacher features", sum(batches), completed=done) as advance:
            for i in todo:
                arrays = _compute_shard(targets, collate, device, ranges[i], views, batch_size, layout, advance)
                r = ranges[i]
                size, sha = _write_shard(folder / names[i], arrays,
                                         {**metadata_base, "rows": f"{r.start * views}:{r.stop * views}"})
                entries[i] = {"bytes": size, "sha256": sha}
    for p in folder.iterdir():  # shards of an earlier layout
        if _SHARD.match(p.name) and p.name not in names:
            p.unlink()
    manifest = {
        "format": FORMAT, "version": VERSION, "fingerprint": fp, "match": match,
        "samples": n, "views": views, "rows": n * views, "row_order": "index * views + view",
        "samples_per_shard": shard_size,
        "shapes": {"embed_dim": target.embed_dim, "map_channels": list(target.map_channels), "hidden_dim": target.hidden_dim},
        "tensors": {k: {"dtype": d, "shape": list(shape)} for k, (d, shape) in layout.items()},
        "shards": [{"file": names[i], "samples": [r.start, r.stop], "rows": [r.start * views, r.stop * views], **entries[i]}
                   for i, r in enumerate(ranges)],
        "bytes": sum(e["bytes"] for e in entries.values()),
    }
    if manifest != old:
        write_json(folder / MANIFEST, manifest)
    return manifest


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def human_size(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------------------------------------ reading
def load_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a complete cache, or a one-line UserError saying why there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"teacher cache {str(folder)!r} does not exist; build it with `dcclip-compress cache-teacher RECIPE`")
    path = folder / MANIFEST
    if not path.is_file():
        if any(_SHARD.match(p.name) for p in folder.iterdir()):
            raise UserError(f"teacher cache {str(folder)!r} is incomplete (no {MANIFEST} yet); {RESUME}")
        raise UserError(f"{str(folder)!r} is not a teacher cache (no {MANIFEST}); build one with `dcclip-compress cache-teacher RECIPE`")
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"teacher cache {str(folder)!r}: {MANIFEST} is unreadable or not a teacher-cache manifest; {REBUILD}")
    if manifest.get("version") != VERSION:
        raise UserError(f"teacher cache {str(folder)!r} has format version {manifest.get('version')!r}, this code reads "
                        f"{VERSION}; {REBUILD}")
    return manifest


def verify_cache(folder: str | os.PathLike, expected: dict | None = None) -> dict:
    """Full check: fingerprint (when `expected` is given), every shard's size and sha256. Returns the manifest."""
    t = CachedTargets(folder, expected, verify="full")
    return t.manifest


class CachedTargets:
    """Stage-1 `Targets` read from a teacher-feature cache: no teacher in memory.

    Shards are memory-mapped (one read-only numpy memmap per file); rows are looked up by `batch.keys`
    `(index, view)` and come back float32 on the batch's device, text rows in `present_captions(batch)` order.
    `expected_fingerprint` is `cache_fingerprint(recipe, pairs)` of the run about to train; a cache built for
    anything else is refused with a one-line UserError. `verify`: "lazy" (default) checks a shard's sha256 the first
    time it is read, "full" checks every shard now, "none" only sizes and headers (always checked on open)."""

    def __init__(self, folder: str | os.PathLike, expected_fingerprint: dict | None,
                 verify: Literal["lazy", "full", "none"] = "lazy") -> None:
        self.folder = Path(folder)
        self.manifest = m = load_manifest(self.folder)
        where = f"teacher cache {str(self.folder)!r}"
        if expected_fingerprint is not None:
            why = mismatch(m["match"], json.loads(json.dumps(expected_fingerprint)))
            if why:
                hint = f" (or set teacher.cache_views={m['views']})" if why.startswith(_LABELS["views"]) else ""
                raise UserError(f"{where} does not match this run: {why}; {REBUILD}{hint}")
        self.views, self.samples = int(m["views"]), int(m["samples"])
        s = m["shapes"]
        self.shapes = TargetShapes(int(s["embed_dim"]), [int(c) for c in s["map_channels"]], s["hidden_dim"])
        self.layout = {k: (v["dtype"], tuple(v["shape"])) for k, v in m["tensors"].items()}
        self.n_maps = sum(1 for k in self.layout if k.startswith("map_"))
        self.verify = verify
        self._shards = m["shards"]
        self._starts = np.array([sh["rows"][0] for sh in self._shards], dtype=np.int64)
        self._open: dict[int, dict[str, np.ndarray]] = {}
        self._verified: set[int] = set()
        self._headers = []
        for sh in self._shards:  # sizes and headers: cheap, whatever the cache size
            path = self.folder / sh["file"]
            if not path.is_file():
                raise UserError(f"{where} is missing {sh['file']}; {RESUME}")
            if path.stat().st_size != sh["bytes"]:
                raise UserError(f"{where}: {sh['file']} is {path.stat().st_size} bytes, the manifest says {sh['bytes']} "
                                f"(truncated or replaced); {RESUME}")
            try:
                header, start = _header(path)
                n = sh["rows"][1] - sh["rows"][0]
                for name, (dtype, shape) in self.layout.items():
                    if header[name]["dtype"] != dtype or header[name]["shape"] != [n, *shape]:
                        raise ValueError(name)
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"{where}: {sh['file']} has a damaged or foreign header; {RESUME}") from None
            self._headers.append((header, start))
        if self._starts.size == 0 or self._shards[-1]["rows"][1] != self.samples * self.views:
            raise UserError(f"{where}: its shards do not cover all {self.samples * self.views} rows; {RESUME}")
        if verify == "full":
            for i in range(len(self._shards)):
                self._check(i)

    # -- shards
    def _check(self, i: int) -> None:
        if i in self._verified or self.verify == "none":
            return
        sh = self._shards[i]
        if file_sha256(self.folder / sh["file"]) != sh["sha256"]:
            raise UserError(f"teacher cache {str(self.folder)!r}: {sh['file']} fails its sha256 check (corrupted); "
                            f"rerun `dcclip-compress cache-teacher RECIPE` to recompute it")
        self._verified.add(i)

    def _arrays(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._open:
            self._check(i)
            header, start = self._headers[i]
            buf = np.memmap(self.folder / self._shards[i]["file"], dtype=np.uint8, mode="r")
            arrays = {}
            for name, (dtype, _) in self.layout.items():
                lo, hi = header[name]["data_offsets"]
                arrays[name] = buf[start + lo : start + hi].view(_NP_DTYPES[dtype]).reshape(header[name]["shape"])
            self._open[i] = arrays
        return self._open[i]

    def rows(self, batch: Batch) -> np.ndarray:
        keys = batch.keys.detach().cpu().numpy().astype(np.int64).reshape(-1, 2)
        index, view = keys[:, 0], keys[:, 1]
        if len(keys) and (view.min() < 0 or view.max() >= self.views):
            raise UserError(f"teacher cache {str(self.folder)!r} holds {self.views} views per sample but the batch asks "
                            f"for view {int(view.max())}; train with LoopContext(views={self.views}) "
                            f"(teacher.cache_views={self.views})")
        if len(keys) and (index.min() < 0 or index.max() >= self.samples):
            raise UserError(f"teacher cache {str(self.folder)!r} holds {self.samples} samples but the batch asks for "
                            f"sample {int(index.max())}; {REBUILD}")
        return index * self.views + view

    def gather(self, names: Sequence[str], rows: np.ndarray) -> dict[str, np.ndarray]:
        """fp16/uint8 rows of the named tensors, in `rows` order."""
        out = {name: np.empty((len(rows), *self.layout[name][1]), dtype=_NP_DTYPES[self.layout[name][0]]) for name in names}
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        for i in np.unique(shard):
            sel = np.flatnonzero(shard == i)
            local = rows[sel] - self._starts[i]
            arrays = self._arrays(int(i))
            for name in names:
                out[name][sel] = arrays[name][local]
        return out

    @staticmethod
    def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(a).to(device).float()

    # -- the Targets protocol
    def image(self, batch: Batch) -> ImageFeatures:
        dev = batch.pixels.device
        names = ["image_embedding"] + [f"map_{i}" for i in range(self.n_maps)]
        got = self.gather(names, self.rows(batch))
        return ImageFeatures(self._tensor(got["image_embedding"], dev),
                             [self._tensor(got[f"map_{i}"], dev) for i in range(self.n_maps)])

    def text(self, batch: Batch) -> TextFeatures:
        dev = batch.pixels.device
        rows = self.rows(batch)
        masks = self.gather([f"has_{lang}" for lang in LANGS], rows)
        parts, hidden = [], []
        for lang in LANGS:
            present = (batch.has_en if lang == "en" else batch.has_zh).detach().cpu().numpy().astype(bool)
            if not np.array_equal(masks[f"has_{lang}"].astype(bool), present):
                raise UserError(f"teacher cache {str(self.folder)!r}: its {lang} captions present differ from this "
                                f"batch's (other data); {REBUILD}")
            names = [f"{lang}_embedding"] + ([f"{lang}_hidden"] if self.shapes.hidden_dim else [])
            got = self.gather(names, rows[present])
            parts.append(got[f"{lang}_embedding"])
            if self.shapes.hidden_dim:
                hidden.append(got[f"{lang}_hidden"])
        emb = self._tensor(np.concatenate(parts), dev)
        return TextFeatures(emb, self._tensor(np.concatenate(hidden), dev) if self.shapes.hidden_dim else None)


# ------------------------------------------------------------------------------------------------ recipes
def open_recipe_cache(recipe: Recipe, pairs: PairSet, verify: Literal["lazy", "full", "none"] = "lazy") -> CachedTargets:
    """Stage 1's targets from `recipe.teacher.cache`, checked against this recipe and its training data."""
    if not recipe.teacher.cache:
        raise ValueError("recipe.teacher.cache is not set")
    return CachedTargets(recipe.teacher.cache, cache_fingerprint(recipe, pairs), verify=verify)


def build_recipe_cache(recipe: Recipe, out: str | os.PathLike | None = None, views: int | None = None,
                       batch_size: int = 64, shard_size: int | None = None) -> tuple[Path, dict]:
    """`dcclip-compress cache-teacher`: load the recipe's data (and its teacher, when something must be computed),
    write or finish the cache; returns (folder, manifest)."""
    from compress.pipeline.data import load_run_data

    if recipe.teacher.kind == "none":
        raise UserError("teacher.kind is 'none': there is no teacher whose features could be cached")
    if views is not None and not 1 <= views <= 1024:
        raise UserError(f"--views {views}: use 1..1024 augmented views per sample")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: use at least 1")
    if views is not None:
        recipe = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"cache_views": views})})
    data = load_run_data(recipe.data, recipe.seed)
    loaded: list[Teacher] = []

    def load() -> Teacher:
        if not loaded:
            from compress.pipeline.run import load_teacher

            loaded.append(load_teacher(recipe))
        return loaded[0]

    cfg = recipe.teacher
    if cfg.kind == "hf" and not Path(cfg.spec).expanduser().is_dir():
        load()  # a hub id: from_pretrained fetches it into the Hugging Face cache, where its revision is read
    match = cache_fingerprint(recipe, data.train)
    folder = Path(out) if out is not None else default_folder(recipe, match)
    manifest = write_cache(recipe, load, data.train, folder, shard_size=shard_size, batch_size=batch_size)
    CachedTargets(folder, match, verify="none")  # opens and matches (write_cache checksummed every shard)
    return folder, manifest
