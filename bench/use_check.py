"""Issue 18's acceptance on a finished run: classify 8 emoji images rendered here against 100 labels (en + zh TSV)
with the CLI on the run's export bundle, and with the Python API on the run (eager) and on the bundle (.pte).

    python -m bench.use_check [--run runs/mobilevit_int8] [--out docs/results/use_check.json]

The labels are 100 of the run's `eval` classes (S: the students' own pairs), drawn with a fixed seed; the images are
8 of them, drawn by the parity renderer (the OpenMoji font, odd canvas sizes, as the Android parity images). The
bundle's own `eval` top-1 (574 labels) predicts how many of the 8 it gets right; 100 labels are an easier task.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compress.atomic import write_json
from compress.home import runs_dir

N_LABELS, N_IMAGES, SEED = 100, 8, 0
SIZES = ((96, 80), (64, 64), (120, 90), (50, 70), (200, 150), (81, 81), (64, 100), (150, 110))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=runs_dir("mobilevit_int8"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/use_check.json"))
    args = ap.parse_args(argv)

    from PIL import Image

    from compress import load
    from compress.data.emoji import emoji_classes
    from compress.pipeline.data import load_run_data
    from compress.readers import read_json
    from compress.recipe.schema import Recipe
    from mobile_export.bundle.parity import _render

    recipe = Recipe.model_validate(read_json(args.run / "recipe.json", "run recipe", "pass a finished run"))
    data = load_run_data(recipe.data, recipe.seed)
    eval_ids = sorted(data.eval_splits["eval"].class_ids)
    rng = random.Random(SEED)
    label_ids = rng.sample(eval_ids, N_LABELS)
    image_ids = label_ids[:N_IMAGES]
    classes = {c.index: c for c in emoji_classes()}
    report = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    bundle_eval = report["models"]["student_int8_pte"]["zero_shot"]["eval"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tsv = tmp / "labels.tsv"
        tsv.write_text("id\ten\tzh\n" + "".join(f"{i}\t{data.names['en'][i]}\t{data.names['zh'][i]}\n"
                                                  for i in label_ids), encoding="utf-8")
        images = []
        for n, (cid, (w, h)) in enumerate(zip(image_ids, SIZES)):
            path = tmp / f"{n}.png"
            Image.fromarray(_render(classes[cid].emoji, w, h)).save(path)
            images.append(path)
        cli = Path(sys.executable).with_name("dcclip-compress")
        t0 = time.perf_counter()
        res = subprocess.run([str(cli), "classify", str(args.run / "export"), *map(str, images), "--labels", str(tsv),
                              "--json"], capture_output=True, text=True, check=True)
        cli_s = time.perf_counter() - t0
        cli_top1 = [int(row["top"][0]["id"]) for row in json.loads(res.stdout)]
        eager = load(args.run).classify(images, label_ids_as_labels(data, label_ids), top_k=1)
        pte = load(args.run / "export").classify(images, label_ids_as_labels(data, label_ids), top_k=1)
    eager_top1 = [int(r[0].label.id) for r in eager]
    pte_top1 = [int(r[0].label.id) for r in pte]
    result = {
        "run": str(args.run), "labels": N_LABELS, "images": N_IMAGES, "seed": SEED,
        "truth": image_ids, "names": [data.names["en"][i] for i in image_ids],
        "cli_bundle_top1": cli_top1, "api_run_top1": eager_top1, "api_bundle_top1": pte_top1,
        "correct": {"cli_bundle": sum(a == b for a, b in zip(cli_top1, image_ids)),
                    "api_run": sum(a == b for a, b in zip(eager_top1, image_ids)),
                    "api_bundle": sum(a == b for a, b in zip(pte_top1, image_ids))},
        "run_and_bundle_agree": eager_top1 == pte_top1,
        "bundle_eval_top1": {lang: bundle_eval[lang]["top1"] for lang in ("en", "zh")},
        "predicted_correct": {lang: round(bundle_eval[lang]["top1"] * N_IMAGES, 2) for lang in ("en", "zh")},
        "cli_seconds": round(cli_s, 1),
    }
    write_json(args.out, result)
    print(json.dumps(result, ensure_ascii=False))
    return result


def label_ids_as_labels(data, ids: list[int]) -> list[dict]:
    return [{"en": data.names["en"][i], "zh": data.names["zh"][i], "id": str(i)} for i in ids]


if __name__ == "__main__":
    main()
