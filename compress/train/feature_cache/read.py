"""Reading a teacher-feature cache: stage-1 `Targets` from disk, with no teacher in memory.

Checks: opening a cache (`CachedTargets`) compares the fingerprint with the recipe's, and the size and header of
every shard (cheap, whatever the cache size); each shard's sha256 is checked the first time training reads from it
(`verify="lazy"`, the default: the whole file is read once, which also warms the page cache for the reads that
follow), or all of them up front (`verify="full"`, and `verify_cache`). Every refusal is one line that says how to
rebuild or finish the cache.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from compress.data.pairs import PairSet
from compress.errors import UserError
from compress.prompts import LANGS
from compress.recipe import Recipe
from compress.teachers.base import ImageFeatures, TextFeatures
from compress.train.data import Batch
from compress.train.distill import TargetShapes
from compress.train.feature_cache.fingerprint import LABELS, cache_fingerprint, file_sha256, mismatch
from compress.train.feature_cache.shards import FORMAT, MANIFEST, NP_DTYPES, SHARD_NAME, VERSION, read_header, read_json

REBUILD = "rebuild it with `dcclip-compress cache-teacher RECIPE`"
RESUME = "finish it with `dcclip-compress cache-teacher RECIPE` (it resumes)"


def load_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a complete cache, or a one-line UserError saying why there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"teacher cache {str(folder)!r} does not exist; build it with `dcclip-compress cache-teacher RECIPE`")
    path = folder / MANIFEST
    if not path.is_file():
        if any(SHARD_NAME.match(p.name) for p in folder.iterdir()):
            raise UserError(f"teacher cache {str(folder)!r} is incomplete (no {MANIFEST} yet); {RESUME}")
        raise UserError(f"{str(folder)!r} is not a teacher cache (no {MANIFEST}); build one with `dcclip-compress cache-teacher RECIPE`")
    manifest = read_json(path)
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
        try:  # a manifest edited or written by something else: one line, not a KeyError
            self._read_manifest(m, where, expected_fingerprint, verify)
            self._open: dict[int, dict[str, np.ndarray]] = {}
            self._verified: set[int] = set()
            self._headers = []
            for sh in self._shards:  # sizes and headers: cheap, whatever the cache size
                if not isinstance(sh["sha256"], str):  # read lazily later: a missing hash is damage now, not a KeyError then
                    raise TypeError(f"{sh['file']}: sha256 is not text")
                path = self.folder / sh["file"]
                if not path.is_file():
                    raise UserError(f"{where} is missing {sh['file']}; {RESUME}")
                if path.stat().st_size != sh["bytes"]:
                    raise UserError(f"{where}: {sh['file']} is {path.stat().st_size} bytes, the manifest says {sh['bytes']} "
                                    f"(truncated or replaced); {RESUME}")
                try:
                    header, start = read_header(path)
                    n = sh["rows"][1] - sh["rows"][0]
                    for name, (dtype, shape) in self.layout.items():
                        if header[name]["dtype"] != dtype or header[name]["shape"] != [n, *shape]:
                            raise ValueError(name)
                except (OSError, ValueError, KeyError, TypeError):
                    raise UserError(f"{where}: {sh['file']} has a damaged or foreign header; {RESUME}") from None
                self._headers.append((header, start))
            if self._starts.size == 0 or self._shards[-1]["rows"][1] != self.samples * self.views:
                raise UserError(f"{where}: its shards do not cover all {self.samples * self.views} rows; {RESUME}")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exn:
            raise UserError(f"{where}: {MANIFEST} is damaged ({type(exn).__name__}: {exn}); {REBUILD}") from None
        if verify == "full":
            for i in range(len(self._shards)):
                self._check(i)

    def _read_manifest(self, m: dict, where: str, expected_fingerprint: dict | None, verify: str) -> None:
        """The manifest's fingerprint check, shapes, tensor layout and shard table (KeyError & co. on damage)."""
        if expected_fingerprint is not None:
            why = mismatch(m["match"], json.loads(json.dumps(expected_fingerprint)))
            if why:
                hint = f" (or set teacher.cache_views={m['views']})" if why.startswith(LABELS["views"]) else ""
                raise UserError(f"{where} does not match this run: {why}; {REBUILD}{hint}")
        self.views, self.samples = int(m["views"]), int(m["samples"])
        s = m["shapes"]
        self.shapes = TargetShapes(int(s["embed_dim"]), [int(c) for c in s["map_channels"]], s["hidden_dim"],
                                   [int(d) for d in s.get("text_layer_dims", [])])
        self.layout = {k: (v["dtype"], tuple(v["shape"])) for k, v in m["tensors"].items()}
        self.n_maps = sum(1 for k in self.layout if k.startswith("map_"))
        # teacher.cache_maps the cache was written with; pooled maps are matched by pooling the student's maps
        self.maps_mode = str(m.get("maps", "full"))
        self.pooled_maps = self.maps_mode.startswith("pooled:")
        self.verify = verify
        self._shards = m["shards"]
        self._starts = np.array([sh["rows"][0] for sh in self._shards], dtype=np.int64)

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
                arrays[name] = buf[start + lo : start + hi].view(NP_DTYPES[dtype]).reshape(header[name]["shape"])
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
        out = {name: np.empty((len(rows), *self.layout[name][1]), dtype=NP_DTYPES[self.layout[name][0]]) for name in names}
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
        n_layers = len(self.shapes.text_layer_dims)
        parts, hidden, layers = [], [], [[] for _ in range(n_layers)]
        for lang in LANGS:
            present = (batch.has_en if lang == "en" else batch.has_zh).detach().cpu().numpy().astype(bool)
            if not np.array_equal(masks[f"has_{lang}"].astype(bool), present):
                raise UserError(f"teacher cache {str(self.folder)!r}: its {lang} captions present differ from this "
                                f"batch's (other data); {REBUILD}")
            names = [f"{lang}_embedding"] + ([f"{lang}_hidden"] if self.shapes.hidden_dim else [])
            names += [f"{lang}_layer_{i}" for i in range(n_layers)]
            got = self.gather(names, rows[present])
            parts.append(got[f"{lang}_embedding"])
            if self.shapes.hidden_dim:
                hidden.append(got[f"{lang}_hidden"])
            for i in range(n_layers):
                layers[i].append(got[f"{lang}_layer_{i}"])
        emb = self._tensor(np.concatenate(parts), dev)
        return TextFeatures(emb, self._tensor(np.concatenate(hidden), dev) if self.shapes.hidden_dim else None,
                            [self._tensor(np.concatenate(rows_i), dev) for rows_i in layers])


def open_recipe_cache(recipe: Recipe, pairs: PairSet, verify: Literal["lazy", "full", "none"] = "lazy",
                      tokenizer=None) -> CachedTargets:
    """Stage 1's targets from `recipe.teacher.cache`, checked against this recipe, its training data and (when
    given) the student tokenizer whose window cuts the teacher's captions."""
    if not recipe.teacher.cache:
        raise ValueError("recipe.teacher.cache is not set")
    return CachedTargets(recipe.teacher.cache, cache_fingerprint(recipe, pairs, tokenizer=tokenizer), verify=verify)
