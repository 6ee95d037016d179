"""Stage-1 training throughput: targets from the teacher-feature cache vs the teacher run online, side by side.

    python -m bench.stage1_throughput [--limit 128] [--steps 8] [--reps 5] [--teachers reference,altclip]
        ->  bench/out/stage1_throughput.json

Same student (the headline recipe's: mobilevit_xxs + text_tiny, embed 128, 64 px), same data, same keys (both plans
draw views from range(K)), same number of steps through the real training loop (`compress.train.loop.train` with
`DistillStage`); the only difference is where the targets come from:
  * cache: `CachedTargets` over a cache written beforehand by `write_cache` (its build time is reported);
  * online: `OnlineTargets(teacher)`, the teacher's forward pass on every batch.
The two are alternated (cache, online, online, cache, ...) after one untimed warm-up run each, and the medians of
the repetitions are reported; steps/s counts the training loop's own epoch time (data, targets, forward, backward,
optimizer), not its setup. On a shared host the wall clock moves with other processes' load, so the process CPU time
per step is reported beside it (`speedup_cpu_time`), with the load average.

Teachers (random weights: throughput does not depend on what the weights are):
  * reference: the reference teacher's architecture from recipes/emoji_teacher.yaml (image/text towers, embed dim,
    input size), built with `compress.model.DualEncoder` and wrapped in `ReferenceTeacher`;
  * altclip (--teachers altclip or reference,altclip): an `AltCLIPModel` at ViT-B/16-like widths (224 px input, 768 wide, 12 + 12 layers) behind
    `HFTeacher`, to show the real-teacher case (the real BAAI/AltCLIP is ViT-L/14 + XLM-R large: heavier still).
The top-level `speedup` (cache steps/s / online steps/s) is the AltCLIP-like teacher's when it is measured (the
default): a teacher much heavier than its student is the case the cache exists for. `speedup_by_teacher` has every
measured teacher's, the reference teacher's included: that teacher (ResNet-18 at 48 px) costs less than one
student step, so caching it saves less than half of a step (about 1.7x on the 2-core host).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.atomic import write_json
from compress.pipeline.data import load_run_data
from compress.model import DualEncoder, DualEncoderSpec
from compress.recipe import DistillConfig, load_recipe
from compress.pipeline.student import build_student
from compress.tokenizer import tokenizer_corpus
from compress.train.feature_cache import CachedTargets, cache_fingerprint, write_cache
from compress.teachers.reference import ReferenceTeacher
from compress.tokenizer import BilingualTokenizer, train_tokenizer
from compress.train import loop
from compress.train.data import EpochPlan, micro_batch_size
from compress.train.distill import DistillStage, OnlineTargets


def reference_teacher(teacher_recipe: str, corpus: list[str], seed: int = 0) -> tuple[ReferenceTeacher, dict]:
    t = load_recipe(teacher_recipe)
    s = t.students
    tok = BilingualTokenizer(train_tokenizer(corpus, s.text.vocab_size), s.text.context_length)
    spec = DualEncoderSpec(s.image.arch, s.text.arch, s.embed_dim, t.data.image_size, s.text.context_length, tok.vocab_size)
    torch.manual_seed(seed)
    model = DualEncoder(spec)
    teacher = ReferenceTeacher(model, tok, name="reference-arch (random init)")
    info = {"kind": "reference", "recipe": teacher_recipe, "image_arch": s.image.arch, "text_arch": s.text.arch,
            "embed_dim": s.embed_dim, "image_size": t.data.image_size, "params": teacher.num_params(),
            "map_channels": teacher.map_channels}
    return teacher, info


def altclip_teacher(width: int, layers: int, image_size: int, patch: int, seed: int = 0):
    from transformers import AltCLIPConfig, AltCLIPModel

    from compress.teachers.hf import HFTeacher
    from tests.hf_fixtures import _xlmr_tokenizer  # the tiny XLM-R-style tokenizer the test fixtures train offline

    tok = _xlmr_tokenizer()
    heads = max(1, width // 64)
    torch.manual_seed(seed)
    config = AltCLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, project_dim=width),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch),
        projection_dim=512,
    )
    teacher = HFTeacher(AltCLIPModel(config), tok, name=f"altclip-like w{width} L{layers} p{patch} {image_size}px (random init)")
    info = {"kind": "altclip", "width": width, "layers": layers, "patch": patch, "image_size": image_size,
            "params": teacher.num_params(), "map_layers": teacher.map_layers}
    return teacher, info


def run_once(recipe, pairs, tok, targets, cfg: DistillConfig, views: int) -> dict:
    """One stage-1 run from a fresh student: optimizer steps, wall seconds inside the loop's epochs, process CPU
    seconds of the whole `loop.train` call (setup included: conservative for the faster side), images."""
    stage = DistillStage(build_student(recipe, tok), targets, cfg, seed=recipe.seed)
    cpu = time.process_time()
    hist = loop.train(stage, pairs, tok, cfg, loop.LoopContext(seed=recipe.seed, views=views))
    cpu = time.process_time() - cpu
    images = hist.steps * hist.batch["global_batch"]
    return {"steps": hist.steps, "seconds": round(hist.seconds, 3), "cpu_seconds": round(cpu, 3),
            "steps_per_s": hist.steps / hist.seconds, "images_per_s": images / hist.seconds,
            "steps_per_cpu_s": hist.steps / cpu, "final_loss": hist.losses[-1]}


def measure(recipe, pairs, tok, teacher, info: dict, args, workdir: Path, views: int, steps: int, reps: int) -> dict:
    folder = workdir / f"cache-{info['kind']}"
    identity = {"kind": "bench", **{k: v for k, v in info.items() if k != "params"}, "seed": 0}
    t0 = time.perf_counter()
    manifest = write_cache(recipe, teacher, pairs, folder, views=views, batch_size=args.cache_batch_size, identity=identity)
    build_s = time.perf_counter() - t0
    cached = CachedTargets(folder, cache_fingerprint(recipe, pairs, views, identity))
    online = OnlineTargets(teacher)
    plan = EpochPlan(pairs, micro_batch_size(args.batch_size, 1, 1, pairs.num_groups), recipe.seed, views=views)
    epochs = max(1, math.ceil(steps / plan.batches_per_epoch))
    cfg = DistillConfig(epochs=epochs, batch_size=args.batch_size, lr=2e-3)
    warm = DistillConfig(epochs=1, batch_size=args.batch_size, lr=2e-3)
    sources = {"cache": cached, "online": online}
    for name, targets in sources.items():  # untimed: allocator, oneDNN kernels, page cache
        run_once(recipe, pairs, tok, targets, warm, views)
    runs: dict[str, list[dict]] = {"cache": [], "online": []}
    for rep in range(reps):
        order = ["cache", "online"] if rep % 2 == 0 else ["online", "cache"]
        for name in order:
            r = run_once(recipe, pairs, tok, sources[name], cfg, views)
            runs[name].append(r)
            print(f"  {info['kind']} rep {rep + 1}/{reps} {name}: {r['steps_per_s']:.3f} steps/s "
                  f"({r['images_per_s']:.1f} img/s, {r['steps_per_cpu_s']:.3f} steps per CPU-s)", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("steps_per_s", "images_per_s", "steps_per_cpu_s")}
           for k, v in runs.items()}
    # same keys, same student init, same steps: the two sides must train identically up to the targets' fp16 rounding
    losses = {k: runs[k][0]["final_loss"] for k in runs}
    return {
        "teacher": info,
        "speedup": med["cache"]["steps_per_s"] / med["online"]["steps_per_s"],
        "speedup_cpu_time": med["cache"]["steps_per_cpu_s"] / med["online"]["steps_per_cpu_s"],
        "final_loss": losses,
        "cache": med["cache"], "online": med["online"], "runs": runs,
        "views": views, "reps": reps, "steps_per_run": epochs * plan.batches_per_epoch, "global_batch": plan.batch_size,
        "cache_build_s": round(build_s, 2), "cache_bytes": manifest["bytes"], "cache_rows": manifest["rows"],
        "cache_shards": len(manifest["shards"]),
        "cache_build_views_per_s": manifest["rows"] / build_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/mobilevit_int8.yaml", help="student recipe (student, data)")
    ap.add_argument("--teacher-recipe", default="recipes/emoji_teacher.yaml", help="reference teacher architecture")
    ap.add_argument("--limit", type=int, default=128, help="emoji classes (the cache build time grows with it)")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cache-batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per timed run (whole epochs)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: a shared host's other load slows both sides alike, instead of "
                         "stalling OpenMP barriers)")
    ap.add_argument("--teachers", default="reference,altclip",
                    help="comma-separated: reference, altclip (a ViT-B-like AltCLIP teacher: slow on CPU)")
    ap.add_argument("--altclip-width", type=int, default=768)
    ap.add_argument("--altclip-layers", type=int, default=12)
    ap.add_argument("--altclip-image-size", type=int, default=224)
    ap.add_argument("--altclip-patch", type=int, default=16)
    ap.add_argument("--altclip-views", type=int, default=1, help="views cached for the AltCLIP-like teacher (build time)")
    ap.add_argument("--altclip-steps", type=int, default=2)
    ap.add_argument("--altclip-reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/out/stage1_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    recipe = load_recipe(args.recipe, [f"data.limit={args.limit}", f"teacher.cache_views={args.views}"])
    data = load_run_data(recipe.data, recipe.seed)
    pairs = data.train
    s = recipe.students
    corpus = tokenizer_corpus(data.train)
    tok = BilingualTokenizer(train_tokenizer(corpus, s.text.vocab_size), s.text.context_length)
    setups = [(*reference_teacher(args.teacher_recipe, corpus), (args.views, args.steps, args.reps))]
    kinds = [k.strip() for k in args.teachers.split(",") if k.strip()]
    if not kinds or set(kinds) - {"reference", "altclip"}:
        raise SystemExit(f"error: --teachers {args.teachers!r}: name reference and/or altclip")
    if "reference" not in kinds:
        setups.clear()
    if "altclip" in kinds:
        setups.append((*altclip_teacher(args.altclip_width, args.altclip_layers, args.altclip_image_size, args.altclip_patch),
                       (args.altclip_views, args.altclip_steps, args.altclip_reps)))
    results = {}
    workdir = Path(tempfile.mkdtemp(prefix="stage1-throughput-"))
    try:
        for teacher, info, (views, steps, reps) in setups:
            print(f"{info['kind']} teacher: {info['params'] / 1e6:.1f} M params", flush=True)
            results[info["kind"]] = measure(recipe, pairs, tok, teacher, info, args, workdir, views, steps, reps)
            del teacher
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ref = results.get("altclip") or next(iter(results.values()))
    student = build_student(recipe, tok)
    result = {
        "speedup": ref["speedup"],
        "speedup_teacher": ref["teacher"]["kind"],
        "speedup_cpu_time": ref["speedup_cpu_time"],
        "speedup_by_teacher": {k: r["speedup"] for k, r in results.items()},
        "cache_steps_per_s": ref["cache"]["steps_per_s"], "online_steps_per_s": ref["online"]["steps_per_s"],
        "cache_images_per_s": ref["cache"]["images_per_s"], "online_images_per_s": ref["online"]["images_per_s"],
        "cache_build_s": ref["cache_build_s"],
        "setup": {
            "student": {"image_arch": s.image.arch, "text_arch": s.text.arch, "embed_dim": s.embed_dim,
                        "image_size": recipe.data.image_size, "params": student.tower_params()},
            "recipe": args.recipe, "limit": args.limit, "samples": len(pairs), "groups": pairs.num_groups,
            "views": ref["views"], "batch_size": args.batch_size, "reps": ref["reps"], "steps_per_run": ref["steps_per_run"],
            "host": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
            "command": " ".join(["python -m bench.stage1_throughput", *sys.argv[1:]]),
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        "teachers": results,
    }
    result["setup"]["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    write_json(args.out, result)
    print(args.out)
    for kind, r in results.items():
        print(f"{kind}: cache {r['cache']['steps_per_s']:.3f} steps/s vs online {r['online']['steps_per_s']:.3f} "
              f"steps/s -> speedup {r['speedup']:.2f}x ({r['speedup_cpu_time']:.2f}x in CPU time; cache built in "
              f"{r['cache_build_s']:.1f} s, "
              f"{r['cache_bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
