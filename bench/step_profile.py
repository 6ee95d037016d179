"""Where a training step's time goes, per stage of the headline run (issue 17): is training compute-bound?

    python -m bench.step_profile [--recipe recipes/mobilevit_int8.yaml] [--steps 12] [--workers N]
        ->  bench/out/step_profile.json

For each stage (the reference teacher's own training, stage 1, stage 2, QAT), in one process, on the same batches:
- `step_s`: the median wall time between two optimizer steps of the real loop (`compress.train.loop.train`, its
  DataLoader with `data.workers` workers, accelerate, logging), after two warm-up steps;
- `model_s`: the model's forward + backward + optimizer step on ready batches (already collated and tokenised), the
  same batches in the same order: what the step would cost if data were free;
- the split of a step done by hand, on one core's worth of time: `data_s` (augmentation, captions, tokenisation:
  the collate function), `forward_s`, `backward_s`, `optimizer_s`;
- `ratio` = step_s / model_s: the acceptance asks <= 1.25 for every stage;
- `kernel_share`: the share of the loop's CPU time spent in the kernel (page faults of freshly mapped activations,
  thread wake-ups), and `cpu_busy`: CPU seconds per wall second (2.0 = both cores busy).

The stages are built as the pipeline builds them (`build_student`, `DistillStage` with the online reference teacher,
`AlignStage` with the stage-1 anchor, QAT's fake-quant towers and `qat_align_config`), on the headline's data; the
reference teacher must be cached (`make run` trains it once). Numbers are this host's; compare ratios, not times.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HEADLINE = "recipes/mobilevit_int8.yaml"


def _subset(pairs, n_groups: int, seed: int = 0):
    """The rows of n_groups groups drawn at random: a few batches' worth of the stage's own data, with its mix of
    paired, image-only and text-only rows (text-only rows stay last, as PairSet wants)."""
    from compress.data.pairs import PairSet
    from compress.data.store import select_images

    if n_groups >= pairs.num_groups:
        return pairs
    chosen = torch.randperm(pairs.num_groups, generator=torch.Generator().manual_seed(seed))[:n_groups].sort().values
    new = torch.full((pairs.num_groups,), -1, dtype=torch.long)
    new[chosen] = torch.arange(n_groups)
    keep = torch.nonzero(new[pairs.groups] >= 0).flatten()
    with_image = keep[keep < pairs.num_images]
    images = pairs.images[with_image] if torch.is_tensor(pairs.images) else select_images(pairs.images, with_image)
    old = chosen.tolist()
    return PairSet(images, new[pairs.groups[keep]], [pairs.en[g] for g in old], [pairs.zh[g] for g in old],
                   pairs.templated, {lang: {int(new[g]): c for g, c in m.items() if new[g] >= 0}
                                     for lang, m in pairs.more.items()})


def _batches(pairs, tokenizer, cfg, seed: int, teacher_input, steps: int):
    """The loop's first `steps` batches (its plan and collate function), and the time the collate took per batch."""
    from compress.train.data import EpochPlan, KeyCollate

    plan = EpochPlan(pairs, cfg.batch_size, seed)
    collate = KeyCollate(pairs, seed, tokenizer, teacher_input)
    keys = plan.plan(0)[:steps]
    t0 = time.perf_counter()
    batches = [collate(k) for k in keys]
    return batches, (time.perf_counter() - t0) / max(len(batches), 1)


def _by_hand(stage, batches, cfg) -> dict:
    """forward / backward / optimizer per step on ready batches (the first step warms up and is not counted)."""
    optimizer = torch.optim.AdamW(stage.param_groups(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    parts = {"forward_s": [], "backward_s": [], "optimizer_s": []}
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss, _ = stage(batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(stage.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stage.after_step()
        t3 = time.perf_counter()
        if i >= 1:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[k].append(v)
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["model_s"] = sum(out.values())
    return out


def _loop_step(stage, pairs, tokenizer, cfg, seed: int, workers: int, teacher_input, steps: int) -> dict:
    """The real loop over `steps` steps: the median time between optimizer steps (its per-step log), warm-up excluded."""
    import csv

    from compress.recipe.schema import TrainingConfig
    from compress.train import loop

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = os.times()
        ctx = loop.LoopContext(Path(tmp), seed, TrainingConfig(tensorboard=False, checkpoint_every=10**6),
                               distributed=False, workers=workers, teacher_input=teacher_input)
        t0 = time.perf_counter()
        loop.train(stage, pairs, tokenizer, cfg.model_copy(update={"epochs": 1}), ctx)
        total = time.perf_counter() - t0
        cpu1 = os.times()
        with (Path(tmp) / "logs" / "scalars.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    ips = [float(r["images_per_s"]) for r in rows][2:]
    step = [cfg.batch_size / x for x in ips]
    user = (cpu1.user - cpu0.user) + (cpu1.children_user - cpu0.children_user)
    system = (cpu1.system - cpu0.system) + (cpu1.children_system - cpu0.children_system)
    return {"step_s": statistics.median(step), "step_mean_s": statistics.fmean(step), "loop_steps": len(rows),
            "loop_total_s": total, "kernel_share": system / max(user + system, 1e-9),
            "cpu_busy": (user + system) / max(total, 1e-9)}


def stages(recipe_path: str):
    """(name, stage module factory, pairs, tokenizer, cfg, seed, teacher_input) for each stage of the headline run."""
    from compress.pipeline.data import load_run_data, with_unpaired
    from compress.pipeline.quantize import qat_align_config
    from compress.pipeline.run import load_teacher
    from compress.pipeline.student import build_student, frozen_towers, run_tokenizer
    from compress.quant.schemes import get_scheme
    from compress.recipe import load_recipe
    from compress.teachers.reference import reference_recipe_for
    from compress.train.align import AlignStage
    from compress.train.distill import DistillStage, OnlineTargets
    from compress.model import example_inputs

    recipe = load_recipe(recipe_path)
    data = with_unpaired(recipe, load_run_data(recipe.data, recipe.seed))
    tok = run_tokenizer(recipe, data.stage1)
    teacher = load_teacher(recipe)
    t_recipe = reference_recipe_for(recipe)
    t_data = load_run_data(t_recipe.data, t_recipe.seed)
    t_tok = run_tokenizer(t_recipe, t_data.train)
    teacher_input = getattr(teacher, "train_input", None)

    def teacher_stage():
        m = build_student(t_recipe, t_tok)
        return AlignStage(m.image, m.text, m.logit_scale, t_recipe.align)

    def stage1():
        return DistillStage(build_student(recipe, tok), OnlineTargets(teacher), recipe.distill, seed=recipe.seed)

    def stage2():
        m = build_student(recipe, tok)
        return AlignStage(m.image, m.text, m.logit_scale, recipe.align, teacher=teacher, reference=frozen_towers(m),
                          reference_weight=recipe.align.retain)

    def qat():
        m = build_student(recipe, tok).eval()
        scheme = get_scheme(recipe.qat.scheme)
        ex_img, ex_txt = example_inputs(m, 2)
        image, text = scheme.prepare(copy.deepcopy(m.image), ex_img), scheme.prepare(copy.deepcopy(m.text), ex_txt)
        scheme.set_train(image, True)
        scheme.set_train(text, True)
        ref = tuple(copy.deepcopy(t).eval().requires_grad_(False) for t in (m.image, m.text))
        return AlignStage(image, text, torch.nn.Parameter(m.logit_scale.detach().clone()), qat_align_config(recipe),
                          trim_text=False, reference=ref, reference_weight=recipe.qat.self_distill,
                          contrastive_weight=recipe.qat.contrastive)

    return recipe, [
        ("teacher", teacher_stage, t_data.train, t_tok, t_recipe.align, t_recipe.seed, None),
        ("stage1", stage1, data.stage1, tok, recipe.distill, recipe.seed, None),
        ("stage2", stage2, data.stage1 if recipe.align.retain > 0 else data.train, tok, recipe.align, recipe.seed + 1,
         None),
        ("qat", qat, data.train, tok, qat_align_config(recipe), recipe.seed + 2, None),
    ], teacher_input


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=HEADLINE)
    ap.add_argument("--steps", type=int, default=12, help="steps timed per stage (plus warm-up)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the recipe's data.workers)")
    ap.add_argument("--stages", default="teacher,stage1,stage2,qat")
    ap.add_argument("--out", type=Path, default=Path("bench/out/step_profile.json"))
    args = ap.parse_args(argv)
    from compress.atomic import write_json

    recipe, built, _ = stages(args.recipe)
    workers = recipe.data.workers if args.workers is None else args.workers
    wanted = args.stages.split(",")
    result = {"command": "python -m bench.step_profile " + " ".join(argv if argv is not None else sys.argv[1:]),
              "recipe": args.recipe, "host": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "workers": workers, "stages": {}}
    for name, make, pairs, tok, cfg, seed, t_input in built:
        if name not in wanted:
            continue
        steps = args.steps + 2
        groups = min(pairs.num_groups, steps * cfg.batch_size)
        sub = _subset(pairs, groups)
        torch.manual_seed(seed)
        batches, data_s = _batches(sub, tok, cfg, seed, t_input, steps)
        torch.manual_seed(seed)
        row = {"batch_size": cfg.batch_size, "data_s": data_s, **_by_hand(make(), batches, cfg)}
        torch.manual_seed(seed)
        row |= _loop_step(make(), sub, tok, cfg, seed, workers, t_input, steps)
        row["ratio"] = row["step_s"] / row["model_s"]
        result["stages"][name] = row
        print(json.dumps({name: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}}), flush=True)
    result["acceptance"] = {"compute_bound": all(r["ratio"] <= 1.25 for r in result["stages"].values())}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
