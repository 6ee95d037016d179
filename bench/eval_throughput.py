"""Eval harness throughput: batched, thread-decoded feature extraction vs the naive per-image loop, side by side.

    python -m bench.eval_throughput [CHECKPOINT] [--images N]   ->  bench/out/eval_throughput.json

A generated ImageFolder of N photo-sized JPEGs (500x375, random content) is read twice per round, alternating:
  * harness: `LabelledImages.batches` (thread-pool decode + resize) feeding the image tower in batches of 128;
  * naive: decode, resize and embed one image at a time on the main thread.
Both produce the same embeddings (checked); the ratio of their images/s is the number to read. Also timed: one
100-class x 18-template zero-shot classifier (the harness builds it once per model, class set and language).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compress.atomic import write_json
from compress.data.augment import to_float
from compress.data.labelled import clip_preprocess, from_image_folder
from compress.eval.elevater import class_embeddings
from compress.eval.zero_shot import eager_encoders


def _make_folder(root: Path, n: int, classes: int = 10) -> list[str]:
    rng = np.random.default_rng(0)
    names = [str(i) for i in range(classes)]
    for i in range(n):
        folder = root / names[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (3,), dtype=np.uint8)
        img = (base + rng.integers(0, 60, (375, 500, 3), dtype=np.uint8)).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="runs/mobilevit_int8/student_fp32")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/out/eval_throughput.json"))
    args = ap.parse_args()

    from compress.model import load_checkpoint

    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    enc = eager_encoders("student", model, tokenizer)
    size = enc.image_size
    with tempfile.TemporaryDirectory() as tmp:
        names = _make_folder(Path(tmp), args.images)
        data = from_image_folder(Path(tmp), names, multilabel=False)
        times = {"harness": [], "naive": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            with torch.inference_mode():
                fast = torch.cat([enc.encode_image(to_float(b)) for b in data.batches(size, 128)])
            times["harness"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows = []
            with torch.inference_mode():
                for i in range(len(data)):
                    x = torch.from_numpy(clip_preprocess(data.load(i), size).copy())[None]
                    rows.append(enc.encode_image(to_float(x)))
            times["naive"].append(time.perf_counter() - t0)
            slow = torch.cat(rows)
        max_diff = float((fast - slow).abs().max())

        classes, templates = [f"class {i}" for i in range(100)], [f"a photo of a {{}}, number {t}." for t in range(18)]
        t0 = time.perf_counter()
        class_embeddings(enc, classes, templates, 128)
        text_once = time.perf_counter() - t0
    best = {k: min(v) for k, v in times.items()}
    result = {
        "checkpoint": str(args.checkpoint), "host": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "images": args.images, "image_size": size, "rounds": args.rounds,
        "images_per_s": {k: args.images / v for k, v in best.items()},
        "speedup_harness_vs_naive": best["naive"] / best["harness"],
        "embeddings_max_abs_diff": max_diff,
        "class_text_embeddings_s_100x18_prompts": text_once,
    }
    write_json(args.out, result)
    print(args.out)
    print(result)


if __name__ == "__main__":
    main()
