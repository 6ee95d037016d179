"""recipe -> stages -> artifacts in runs/<name>/.

data -> teacher -> tokenizer -> stage 1 distill -> stage 2 align -> QAT -> export -> eval -> report.
Each stage leaves its artifact in the run folder; `resume` skips a stage whose artifact is already there.
"""
from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


from compress.atomic import write_json
from compress.pipeline import stages
from compress.pipeline.data import load_run_data
from compress.errors import UserError
from compress.progress import log
from compress.recipe.schema import Recipe, load_recipe
from compress.teachers.base import Teacher

TEACHER_CACHE = Path(".cache/teachers")


@dataclass
class RunState:
    recipe: Recipe
    out: Path
    resume: bool
    distributed: bool = True  # False: train alone even under `accelerate launch` (the teacher, while others wait)
    world_size: int = 1
    teacher_data: list[str] = field(default_factory=list)  # why the student's data is not a subset of the teacher's
    timings: dict[str, float] = field(default_factory=dict)
    history: dict[str, dict] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log(f"[bold cyan]▶ {name}[/]")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)


# ------------------------------------------------------------------------------------------------ teacher
def reference_teacher_folder(teacher_recipe: Recipe) -> Path:
    return TEACHER_CACHE / f"{teacher_recipe.name}-{teacher_recipe.fingerprint()}"


def ensure_reference_teacher(recipe_path: str, data_overrides: dict | None = None, seed: int | None = None) -> Path:
    """Train the reference teacher once; later runs with the same teacher recipe reuse the cached checkpoint."""
    teacher_recipe = load_recipe(recipe_path)
    if data_overrides:
        teacher_recipe = teacher_recipe.model_copy(update={"data": teacher_recipe.data.model_copy(update=data_overrides)})
    if seed is not None:  # the seed picks the unseen classes, so it must match the student run's
        teacher_recipe = teacher_recipe.model_copy(update={"seed": seed})
    folder = reference_teacher_folder(teacher_recipe)
    if (folder / "student_fp32" / "model.safetensors").is_file():
        log(f"reference teacher: cached at {folder}")
        return folder / "student_fp32"
    from compress.train.loop import accelerator

    acc = accelerator()
    with acc.main_process_first():  # one process trains the teacher; the others wait, then read the cache
        if not (folder / "student_fp32" / "model.safetensors").is_file():
            tmp = folder.with_name(folder.name + ".partial")
            resume = tmp.is_dir()  # a killed teacher run continues from its own checkpoints
            log(f"reference teacher: {'resuming' if resume else 'training once'} with {recipe_path} (cached in {folder})")
            run_recipe(teacher_recipe, tmp, resume=resume, distributed=False)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
    return folder / "student_fp32"


def load_teacher(recipe: Recipe) -> Teacher | None:
    cfg = recipe.teacher
    if cfg.kind == "none":
        return None
    if cfg.kind == "hf":
        from compress.teachers.hf import HFTeacher

        return HFTeacher.from_config(cfg)
    from compress.teachers.reference import ReferenceTeacher

    # The teacher must never see the student run's unseen classes: same class subset and held-out split.
    same_data = {k: getattr(recipe.data, k) for k in ("unseen_fraction", "limit", "cache_dir")}
    return ReferenceTeacher.from_folder(ensure_reference_teacher(cfg.recipe, same_data, recipe.seed))


def teacher_data_relation(recipe: Recipe) -> list[str]:
    """Why the student's emoji training data is not a strict subset of the reference teacher's ([] when it is)."""
    if recipe.teacher.kind != "reference" or recipe.data.kind != "emoji":
        return []
    from compress.data.emoji import check_train_subset

    keys = ("train_renders", "train_styles", "unseen_fraction", "limit")
    teacher = load_recipe(recipe.teacher.recipe).data
    student_args = {k: getattr(recipe.data, k) for k in keys} | {"seed": recipe.seed}
    teacher_args = {k: getattr(teacher, k) for k in keys} | {"seed": recipe.seed}
    teacher_args |= {k: student_args[k] for k in ("unseen_fraction", "limit")}  # forced onto the teacher
    return check_train_subset(student_args, teacher_args)


# ------------------------------------------------------------------------------------------------ the run
def run_recipe(recipe: Recipe, out: str | Path | None = None, resume: bool = False, distributed: bool = True) -> Path:
    """Under `accelerate launch`, every process trains stages 1 and 2 on its slice of each batch; only the main
    process writes the run folder, and it alone runs QAT, export, eval and the report."""
    from compress.train.loop import accelerator, is_main_process, world_size

    accelerator(recipe.training.mixed_precision)  # sets up the processes before anyone asks who is main
    out = Path(out) if out else Path("runs") / recipe.name
    started = (out / "report.json").exists() or (out / "student_fp32").exists() or (out / "checkpoints").exists()
    if not resume and started:
        raise UserError(f"run folder {str(out)!r} already holds a run; pass --resume to continue it or --out NEW_DIR")
    if "search" in (recipe.students.image.arch, recipe.students.text.arch):
        from compress.search.resolve import resolve_search

        recipe = resolve_search(recipe, out, resume)  # students.*.arch: search -> the winners (arch: custom)
    main = is_main_process() or not distributed
    if main:
        out.mkdir(parents=True, exist_ok=True)
    state = RunState(recipe, out, resume, distributed)
    state.world_size = world_size() if distributed else 1
    if main:
        write_json(out / "recipe.json", recipe.model_dump())
    with state.stage("data"):
        data = load_run_data(recipe.data, recipe.seed)
        log(f"data: {len(data.train)} training samples over {data.train.num_groups} groups; "
            + ", ".join(f"{k}={len(v)}" for k, v in data.eval_splits.items()))
    # With a teacher-feature cache, stage 1 needs no teacher: it is loaded only when stage 2 (affinity) or eval needs it.
    cache_only = recipe.teacher.cache is not None and recipe.align.affinity_weight == 0
    teacher = None
    with state.stage("teacher"):
        if not cache_only:
            teacher = load_teacher(recipe)
        state.teacher_data = teacher_data_relation(recipe)
        if state.teacher_data:
            log(f"[yellow]note:[/] the student's data is not a strict subset of the teacher's: {'; '.join(state.teacher_data)}")
    model, tokenizer = stages.train_fp32(state, data, teacher)
    if cache_only and main:
        with state.stage("teacher"):
            teacher = load_teacher(recipe)
    if not main:
        return out / "report.md"
    quantized = stages.quantize(state, data, model, tokenizer)
    exported = stages.export(state, model, tokenizer, quantized)
    with state.stage("eval"):
        results = stages.evaluate(state, data, teacher, model, tokenizer, quantized, exported)
    from compress.pipeline.report import write_report

    return write_report(state, data, results, exported)
