"""Teacher-feature cache: the teacher's stage-1 targets for K augmented views of every training sample, on disk.

MobileCLIP's "reinforced dataset" idea: the teacher runs once, ahead of training (`dcclip-compress cache-teacher
RECIPE`, driven by `compress.pipeline.cache_teacher`), and stage 1 then reads its targets from disk (`CachedTargets`)
instead of keeping the teacher in memory and running it on every batch. Training samples are addressed by keys
`(index, view)`, and `KeyCollate` turns a key into the same augmented pixels and captions every time, so the cache
holds exactly what training will see as long as the plan draws views from `range(K)` (`LoopContext(views=K)`).

One job per module, each importing only those before it: `fingerprint` (what a cache must agree on with a run),
`shards` (the folder layout and the safetensors shard files), `write` (`write_cache`: compute, resume) and `read`
(`CachedTargets`, `verify_cache`, `open_recipe_cache`). The library takes the teacher (or a loader) and the training
`PairSet` as arguments; loading them is the pipeline's job. This face only re-exports; the modules import each other
by their own names, never through it.
"""
from compress.train.feature_cache.fingerprint import (
    cache_fingerprint,
    default_folder,
    file_sha256,
    fingerprint_hash,
    folder_sha256,
    mismatch,
    teacher_identity,
)
from compress.train.feature_cache.read import CachedTargets, load_manifest, open_recipe_cache, verify_cache
from compress.train.feature_cache.shards import human_size
from compress.train.feature_cache.write import write_cache

__all__ = [
    "CachedTargets", "cache_fingerprint", "default_folder", "file_sha256", "fingerprint_hash", "folder_sha256",
    "human_size", "load_manifest", "mismatch", "open_recipe_cache", "teacher_identity", "verify_cache", "write_cache",
]
