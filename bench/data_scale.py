"""What a corpus costs as it grows (issue 17): synthetic webdataset corpora of 10k, 100k and 300k pairs at 224 px.

    python -m bench.data_scale [--sizes 10000,100000,300000] [--workers 2] [--root /tmp/dcclip-data-scale] [--keep]
        ->  bench/out/data_scale.json

For each size, in fresh processes (so imports and memory are each run's own):
- `index_build_s`: the first load of the shards (one pass that indexes every shard; cached afterwards);
- `startup_s`: process start to the first training batch, index cached (what every later run pays);
- `loader_images_per_s`: one epoch of the DataLoader (`--workers` worker processes decoding, cropping,
  augmenting and tokenising at the headline's 64 px) with nothing consuming it;
- `stage1_images_per_s`: a short stage 1 of the headline recipe on that corpus (its reference teacher online);
- `peak_rss_mb`: the most resident memory of the process and its workers together, sampled every 0.1 s over the
  startup, loader and stage-1 children (workers are forked: their shared pages count once per process, so this
  overstates memory the same way at every size); beside it the main process alone and the PSS of them all (shared
  pages counted once), and each per mode in `memory_by_mode`.

Acceptance (the issue's): peak RSS at the largest size <= 1.2x the smallest, start-up <= 2x, and the loader >= 2x
what stage 1 consumes. The corpora (about 15 kB per image: ~4.5 GB at 300k) are written resumably under `--root` and
deleted at the end unless `--keep`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADLINE = "recipes/mobilevit_int8.yaml"
PER_SHARD = 1000
STAGE1_STEPS = 12


# ------------------------------------------------------------------------------------------------ the corpora
def _photo(rng: np.random.Generator) -> bytes:
    """A 224 px JPEG photo stand-in of random aspect: smooth colour fields (cheap to make, realistic to decode)."""
    import io

    from PIL import Image

    w, h = (224, int(rng.integers(168, 300))) if rng.random() < 0.5 else (int(rng.integers(168, 300)), 224)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    buf = io.BytesIO()
    low.resize((w, h), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_corpus(folder: Path, n: int, seed: int = 0) -> str:
    """n pairs as `train-NNNNNN.tar` shards of PER_SHARD samples in `folder`; shards already complete are kept (each
    is written to a temp name, then renamed). Returns the brace pattern."""
    from webdataset.writer import TarWriter

    folder.mkdir(parents=True, exist_ok=True)
    shards = -(-n // PER_SHARD)
    for s in range(shards):
        path = folder / f"train-{s:06d}.tar"
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, s])
        tmp = path.with_name(path.name + ".partial")
        with tmp.open("wb") as f, TarWriter(f, encoder=False, mtime=0) as w:
            for i in range(s * PER_SHARD, min(n, (s + 1) * PER_SHARD)):
                caption = {"en": f"a photo of object {i} on a {['red', 'blue', 'green'][i % 3]} background",
                           "zh": f"第{i}号物体在{['红色', '蓝色', '绿色'][i % 3]}背景上的照片"}
                w.write({"__key__": f"{i:09d}", "jpg": _photo(rng),
                         "json": json.dumps(caption, ensure_ascii=False).encode("utf-8")})
        tmp.rename(path)
    return str(folder / (f"train-{{000000..{shards - 1:06d}}}.tar" if shards > 1 else "train-000000.tar"))


# ------------------------------------------------------------------------------------------------ children
def _recipe(pattern: str, workers: int):
    from compress.recipe import load_recipe

    return load_recipe(HEADLINE, ["data.kind=webdataset", f"data.shards={pattern}", f"data.workers={workers}",
                                  "data.split_seed=null",
                                  "distill.unpaired_images=null", "distill.text_only=null"])


def _loader(recipe, data, tok):
    import torch

    from compress.train.data import EpochPlan, KeyCollate, KeyDataset
    from compress.train.loop import _one_thread

    plan = EpochPlan(data.train, recipe.distill.batch_size, recipe.seed)
    w = recipe.data.workers
    return plan, torch.utils.data.DataLoader(KeyDataset(), batch_sampler=plan, collate_fn=KeyCollate(data.train, 0, tok),
                                             num_workers=w, worker_init_fn=_one_thread if w else None,
                                             prefetch_factor=4 if w else None)


def child(mode: str, pattern: str, workers: int) -> dict:
    """One measurement in this (fresh) process; prints its JSON."""
    import psutil

    started = psutil.Process().create_time()
    from compress.pipeline.data import load_run_data
    from compress.pipeline.student import run_tokenizer

    recipe = _recipe(pattern, workers)
    t0 = time.perf_counter()
    data = load_run_data(recipe.data, recipe.seed)
    if mode == "index":
        return {"index_build_s": time.perf_counter() - t0, "pairs": len(data.train)}
    tok = run_tokenizer(recipe, data.train)
    plan, loader = _loader(recipe, data, tok)
    if mode == "startup":
        next(iter(loader))
        return {"startup_s": time.time() - started}
    if mode == "loader":
        it, n = iter(loader), 0
        first = next(it)
        t1 = time.perf_counter()
        for batch in it:
            n += len(batch)
        return {"loader_images_per_s": n / (time.perf_counter() - t1), "loader_batches": plan.batches_per_epoch,
                "first_batch": len(first)}
    if mode == "stage1":
        from compress.pipeline.run import load_teacher
        from compress.pipeline.student import build_student
        from compress.train import loop
        from compress.train.distill import DistillStage, OnlineTargets

        from compress.recipe import load_recipe

        teacher = load_teacher(load_recipe(HEADLINE))  # the headline's own reference teacher (cached by make run)
        cfg = recipe.distill.model_copy(update={"epochs": 1})
        pairs = _subset(data.train, STAGE1_STEPS * cfg.batch_size)
        stage = DistillStage(build_student(recipe, tok), OnlineTargets(teacher), cfg, seed=recipe.seed)
        t1 = time.perf_counter()
        hist = loop.train(stage, pairs, tok, cfg, loop.LoopContext(seed=recipe.seed, workers=workers))
        return {"stage1_images_per_s": hist.steps * cfg.batch_size / (time.perf_counter() - t1), "stage1_steps": hist.steps}
    raise SystemExit(f"unknown child mode {mode!r}")


def _subset(pairs, n: int):
    """The first n samples (their images still on disk)."""
    import torch

    from compress.data.pairs import PairSet
    from compress.data.store import select_images

    keep = torch.arange(min(n, len(pairs)))
    return PairSet(select_images(pairs.images, keep), pairs.groups[keep], pairs.en[: len(keep)], pairs.zh[: len(keep)],
                   pairs.templated, {lang: {g: c for g, c in m.items() if g < len(keep)} for lang, m in pairs.more.items()})


def measure(mode: str, pattern: str, workers: int, cwd: Path) -> dict:
    """Run a child; its result plus its memory, sampled every 0.1 s: the peak RSS (MB) of it and its workers summed
    (`peak_rss_mb`), of the main process alone (`peak_main_rss_mb`), and the peak PSS of them all (`peak_pss_mb`, every
    fifth sample: reading smaps is slow), where a page shared by n processes counts 1/n: forked workers share the
    parent's pages until they write to them, so RSS counts what they share once per process and PSS counts it once."""
    import psutil

    cmd = [sys.executable, "-m", "bench.data_scale", "--child", mode, "--pattern", pattern, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = peak_main = peak_pss = tick = 0
    p = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [p] + p.children(recursive=True)
            main_rss = p.memory_info().rss
            peak_main = max(peak_main, main_rss)
            peak = max(peak, main_rss + sum(c.memory_info().rss for c in procs[1:]))
            if tick % 5 == 0:
                peak_pss = max(peak_pss, sum(c.memory_full_info().pss for c in procs))
        except psutil.Error:
            pass
        tick += 1
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"bench.data_scale: child {mode} failed:\n{err[-3000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": peak / 2**20,
            "peak_main_rss_mb": peak_main / 2**20, "peak_pss_mb": peak_pss / 2**20}


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,300000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("/tmp/dcclip-data-scale"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/data_scale.json"))
    ap.add_argument("--keep", action="store_true", help="keep the corpora (deleted by default)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pattern", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.pattern, args.workers)))
        return
    from compress.atomic import write_json

    sizes = [int(x) for x in args.sizes.split(",")]
    if not sizes or min(sizes) < 100:
        raise SystemExit("--sizes: comma-separated pair counts, at least 100 each")
    repo = Path.cwd()
    rows, t_all = [], time.perf_counter()
    try:
        for n in sizes:
            t0 = time.perf_counter()
            pattern = make_corpus(args.root / f"n{n}", n)
            made = time.perf_counter() - t0
            row: dict = {"pairs": n, "corpus_gb": sum(p.stat().st_size for p in (args.root / f"n{n}").glob("*.tar")) / 1e9,
                         "make_corpus_s": made}
            idx = measure("index", pattern, args.workers, repo)
            row |= {"index_build_s": idx["index_build_s"], "index_peak_rss_mb": idx["peak_rss_mb"]}
            peaks: dict[str, dict] = {}
            for mode in ("startup", "loader", "stage1"):
                got = measure(mode, pattern, args.workers, repo)
                peaks[mode] = {k: got.pop(k) for k in ("peak_rss_mb", "peak_main_rss_mb", "peak_pss_mb")}
                row |= got
            row |= {k: max(m[k] for m in peaks.values()) for k in ("peak_rss_mb", "peak_main_rss_mb", "peak_pss_mb")}
            row["memory_by_mode"] = peaks
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    small, large = rows[0], rows[-1]
    result = {
        "command": "python -m bench.data_scale " + " ".join(sys.argv[1:]),
        "host": {"cpus": os.cpu_count()}, "workers": args.workers, "headline_recipe": HEADLINE, "rows": rows,
        "stage1_images_per_s": small["stage1_images_per_s"],
        "ratios": {"peak_rss_largest_over_smallest": large["peak_rss_mb"] / small["peak_rss_mb"],
                   "peak_pss_largest_over_smallest": large["peak_pss_mb"] / small["peak_pss_mb"],
                   "startup_largest_over_smallest": large["startup_s"] / small["startup_s"],
                   "loader_over_stage1": min(r["loader_images_per_s"] / r["stage1_images_per_s"] for r in rows)},
        "seconds": time.perf_counter() - t_all,
    }
    result["acceptance"] = {"memory_flat": result["ratios"]["peak_rss_largest_over_smallest"] <= 1.2,
                            "startup_flat": result["ratios"]["startup_largest_over_smallest"] <= 2.0,
                            "loader_keeps_up": result["ratios"]["loader_over_stage1"] >= 2.0}
    write_json(args.out, result)
    print(json.dumps(result["ratios"] | result["acceptance"], indent=1))


if __name__ == "__main__":
    main()
