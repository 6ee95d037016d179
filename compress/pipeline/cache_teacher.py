"""`dcclip-compress cache-teacher`: the workflow that fills a teacher-feature cache for a recipe.

It loads what the library (`compress.train.feature_cache`) takes as arguments: the recipe's training data and its
teacher (loaded only when some shard must be computed, or for a hub id, whose revision is read from the Hugging Face
cache that loading fills). Loading both is pipeline work, which is why this driver lives here.
"""
from __future__ import annotations

import os
from pathlib import Path

from compress.errors import UserError
from compress.pipeline.data import load_run_data, with_unpaired
from compress.pipeline.student import run_tokenizer
from compress.pipeline.run import load_teacher
from compress.recipe import Recipe
from compress.teachers.base import Teacher
from compress.teachers.hub import locate
from compress.train.feature_cache.fingerprint import cache_fingerprint, default_folder
from compress.train.feature_cache.read import CachedTargets
from compress.train.feature_cache.shards import human_size
from compress.train.feature_cache.write import write_cache

__all__ = ["build_recipe_cache", "human_size"]


def build_recipe_cache(recipe: Recipe, out: str | os.PathLike | None = None, views: int | None = None,
                       batch_size: int = 64, shard_size: int | None = None) -> tuple[Path, dict]:
    """Load the recipe's data (and its teacher, when something must be computed), write or finish the cache;
    returns (folder, manifest)."""
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
            loaded.append(load_teacher(recipe))
        return loaded[0]

    cfg = recipe.teacher
    if cfg.kind == "hf" and not _local(cfg.spec):
        load()  # a hub id: from_pretrained fetches it into the Hugging Face cache, where its revision is read
    # the run's student tokenizer: the teacher reads each caption cut to the student's window, as in an online run
    tokenizer = run_tokenizer(recipe, with_unpaired(recipe, data).stage1)
    match = cache_fingerprint(recipe, data.train, tokenizer=tokenizer)
    folder = Path(out) if out is not None else default_folder(recipe, match)
    manifest = write_cache(recipe, load, data.train, folder, shard_size=shard_size, batch_size=batch_size,
                           tokenizer=tokenizer)
    CachedTargets(folder, match, verify="none")  # opens and matches (write_cache checksummed every shard)
    return folder, manifest


def _local(spec: str) -> bool:
    """Whether the teacher spec is a local folder; a spec that is neither is left to the loader to report (after
    it checks the device and dtype, as a run does)."""
    try:
        return locate(spec)[1]
    except UserError:
        return False
