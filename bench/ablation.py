"""The DC-CLIP ablation on the headline student, at equal optimisation steps, as one command.

    python -m bench.ablation [--recipe recipes/mobilevit_int8.yaml] [--lrs 2.5e-4,5e-4,1e-3,2e-3,4e-3] [--readme]
        ->  bench/out/ablation.json, bench/out/ablation.md (and the table into docs/ablation.md with --readme)

Rows (every student row gets the same number of optimizer steps: the recipe's stage-1 + stage-2 epochs at the same
batch size, so steps per epoch are equal):
- `dcclip`            stage 1 (feature distillation) then stage 2 (contrastive alignment);
- `stage2_only`       contrastive from scratch, no teacher, all epochs in stage 2; its learning rate is swept
                      (`--lrs`, the stage-2 lr) and the best on `eval` (mean of en and zh top-1) is the row, every
                      point of the sweep is in the JSON;
- `stage1_only`       all epochs in stage 1, zero-shot read straight off the distilled towers;
- `dcclip_margin`     DC-CLIP with the one-sided positive-pair margin regulariser (Chen et al., ICLR 2024);
- `dcclip_affinity`   DC-CLIP with TinyCLIP-style affinity mimicking in stage 2 (`align.affinity_weight`);
- `teacher`           the reference teacher itself.
Columns: zero-shot top-1 on `eval`, `transfer` and `unseen`, in English and Chinese. QAT and export are off: this
measures the method, not the int8 path. Each row is a normal run folder under `--out/runs/<row>`; a row whose
report is already there is read, not retrained, so an interrupted ablation continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from compress.atomic import write_json, write_text
from compress.recipe import load_recipe

SPLITS = ("eval", "transfer", "unseen")
README_START, README_END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def row_overrides(base, lrs: list[float]) -> dict[str, list[str]]:
    """Each row's `--set` overrides of the base recipe."""
    e1, e2 = base.distill.epochs, base.align.epochs
    if base.distill.batch_size != base.align.batch_size:
        raise SystemExit("ablation needs equal stage-1 and stage-2 batch sizes (equal steps per epoch)")
    common = ["qat.enabled=false", "export.enabled=false", "eval.splits=[eval, transfer, unseen]"]
    dcclip = common + [f"distill.epochs={e1}", f"align.epochs={e2}", "align.margin_reg=0.0", "align.affinity_weight=0.0"]
    rows = {
        "dcclip": dcclip,
        "stage1_only": common + [f"distill.epochs={e1 + e2}", "align.enabled=false"],
        "dcclip_margin": dcclip[:-2] + [f"align.margin_reg={base.align.margin_reg or 0.1}", "align.affinity_weight=0.0"],
        "dcclip_affinity": dcclip[:-1] + ["align.affinity_weight=1.0"],
    }
    for lr in lrs:
        rows[f"stage2_only@lr={lr:g}"] = common + [
            "distill.enabled=false", f"align.epochs={e1 + e2}", f"align.lr={lr}", "align.margin_reg=0.0",
            "align.affinity_weight=0.0"]
    return rows


def run_row(recipe_path: str, name: str, overrides: list[str], out: Path) -> dict:
    from compress.pipeline.run import run_recipe

    folder = out / "runs" / re.sub(r"[^\w.-]+", "_", name)
    if not (folder / "report.json").is_file():
        recipe = load_recipe(recipe_path, overrides + [f"name=ablation_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"])
        run_recipe(recipe, folder, resume=folder.exists())
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def top1(model: dict) -> dict:
    return {s: {lang: model["zero_shot"][s][lang]["top1"] for lang in ("en", "zh")} for s in SPLITS if s in model["zero_shot"]}


def markdown(result: dict) -> str:
    head = "| row | steps | " + " | ".join(f"{s} en | {s} zh" for s in SPLITS) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(SPLITS))]
    for name, row in result["rows"].items():
        cells = [f"{100 * row['top1'][s][lang]:.1f}" if s in row["top1"] else "–" for s in SPLITS for lang in ("en", "zh")]
        lines.append(f"| {row['label']} | {row.get('steps', '–')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="recipes/mobilevit_int8.yaml")
    ap.add_argument("--lrs", default="2.5e-4,5e-4,1e-3,2e-3,4e-3", help="stage-2 learning rates swept for the stage-2-only row")
    ap.add_argument("--out", type=Path, default=Path("bench/out/ablation"))
    ap.add_argument("--readme", action="store_true", help="write the table into docs/ablation.md between the ablation markers")
    args = ap.parse_args()
    base = load_recipe(args.recipe)
    lrs = [float(x) for x in args.lrs.split(",")]
    reports = {name: run_row(args.recipe, name, ov, args.out) for name, ov in row_overrides(base, lrs).items()}

    def steps(r: dict) -> int:
        return sum(r["training"].get(s, {}).get("steps", 0) for s in ("distill", "align"))

    sweep = {n: r for n, r in reports.items() if n.startswith("stage2_only@")}
    score = lambda r: sum(top1(r["models"]["student_fp32"])["eval"].values())  # noqa: E731
    best = max(sweep, key=lambda n: score(sweep[n]))
    labels = {
        "dcclip": "stage 1 + stage 2 (DC-CLIP)",
        "stage2_only": f"stage 2 only (contrastive from scratch; best lr {best.split('=')[1]} of {args.lrs})",
        "stage1_only": "stage 1 only",
        "dcclip_margin": f"DC-CLIP + margin_reg {base.align.margin_reg or 0.1}",
        "dcclip_affinity": "DC-CLIP + affinity mimicking (weight 1.0)",
    }
    rows = {}
    for key, label in labels.items():
        r = reports[best if key == "stage2_only" else key]
        rows[key] = {"label": label, "steps": steps(r), "top1": top1(r["models"]["student_fp32"]),
                     "params": r["models"]["student_fp32"]["params"]}
    teacher = reports["dcclip"]["models"]["teacher"]
    rows["teacher"] = {"label": "the teacher", "steps": "–", "top1": top1(teacher), "params": teacher["params"]}
    result = {
        "recipe": args.recipe, "command": "python -m bench.ablation " + " ".join(
            f"--{k} {v}" for k, v in (("recipe", args.recipe), ("lrs", args.lrs))),
        "rows": rows,
        "stage2_only_sweep": {n: {"top1": top1(r["models"]["student_fp32"]), "steps": steps(r)} for n, r in sweep.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out.parent / "ablation.json", result)
    table = markdown(result)
    write_text(args.out.parent / "ablation.md", table + "\n")
    print(table)
    if args.readme:
        readme = Path("docs/ablation.md").read_text(encoding="utf-8")
        if README_START in readme and README_END in readme:
            head, rest = readme.split(README_START, 1)
            readme = head + README_START + "\n" + table + "\n" + README_END + rest.split(README_END, 1)[1]
            write_text("docs/ablation.md", readme)


if __name__ == "__main__":
    main()
