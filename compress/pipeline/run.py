"""recipe -> stages -> artifacts in runs/<name>/, and the teacher that a run loads (the reference teacher is trained
by a run of its own recipe, so it lives here: a run may start a run).

data -> teacher -> tokenizer -> stage 1 distill -> stage 2 align -> QAT -> export -> eval -> report.
Each stage leaves its artifact in the run folder; `resume` skips a stage whose artifact is already there.
One module per stage beside this one (student, quantize, export, evaluate, report); this file only orders them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from compress.atomic import write_json
from compress.errors import UserError, one_line
from compress.home import runs_dir
from compress.pipeline.data import load_run_data
from compress.pipeline.state import RunState
from compress.progress import log
from compress.readers import read_json
from compress.recipe.schema import Recipe
from compress.teachers.base import Teacher
from compress.teachers.reference import reference_recipe, reference_teacher_folder, teacher_data_relation


# ------------------------------------------------------------------------------------------------ teacher
def ensure_reference_teacher(recipe_path: str, data_overrides: dict | None = None, seed: int | None = None) -> Path:
    """Train the reference teacher once; later runs with the same teacher recipe reuse the cached checkpoint."""
    teacher_recipe = reference_recipe(recipe_path, data_overrides, seed)
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
            run_recipe(teacher_recipe, tmp, resume=resume, distributed=False, teacher_folder=folder)
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
    from compress.teachers.reference import ReferenceTeacher, shared_data, teacher_seed

    return ReferenceTeacher.from_folder(ensure_reference_teacher(cfg.recipe, shared_data(recipe), teacher_seed(recipe)),
                                        text_layers=cfg.text_layers)


# ------------------------------------------------------------------------------------------------ the run
def run_recipe(recipe: Recipe, out: str | Path | None = None, resume: bool = False, distributed: bool = True,
               teacher_folder: Path | None = None) -> Path:
    """Under `accelerate launch`, every process trains stages 1 and 2 on its slice of each batch; only the main
    process writes the run folder, and it alone runs QAT, export, eval and the report. `teacher_folder`: this run
    trains the reference teacher, and `out` is renamed to it when the run ends (the report says so and prints it)."""
    from compress.pipeline.evaluate import evaluate
    from compress.pipeline.export import export_stage
    from compress.pipeline.quantize import quantize
    from compress.pipeline.student import train_fp32
    from compress.train.loop import accelerator, is_main_process, world_size

    accelerator(recipe.training.mixed_precision)  # sets up the processes before anyone asks who is main
    out = Path(out) if out else runs_dir(recipe.name)
    started = (out / "report.json").exists() or (out / "student_fp32").exists() or (out / "checkpoints").exists()
    if not resume and started:
        raise UserError(f"run folder {str(out)!r} already holds a run; pass --resume to continue it or --out NEW_DIR")
    if "search" in (recipe.students.image.arch, recipe.students.text.arch):
        from compress.pipeline.search import resolve_search

        # students.*.arch: search -> the winners (arch: custom)
        recipe = resolve_search(recipe, out, resume, lambda: search_inputs(recipe))
    if resume and started:
        check_same_recipe(recipe, out)
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
    model, tokenizer = train_fp32(state, data, teacher)
    if cache_only and main:
        with state.stage("teacher"):
            teacher = load_teacher(recipe)
    if not main:
        return out / "report.md"
    quantized = quantize(state, data, model, tokenizer)
    exported = export_stage(state, data, model, tokenizer, quantized)
    with state.stage("eval"):
        results = evaluate(state, data, teacher, model, tokenizer, quantized, exported)
    from compress.pipeline.report import write_report

    return write_report(state, data, results, exported["main"], tokenizer, teacher_folder=teacher_folder)


def check_same_recipe(recipe: Recipe, out: Path) -> None:
    """A resumed run must be the run that was started: the same weight-shaping recipe (`Recipe.fingerprint_payload`:
    data, students, teacher, training, code version, and the settings of every stage that has left an artifact to
    reuse). Anything else would mix artifacts of two recipes in one folder. A stage not reached yet may change (the
    QAT sweep reuses a finished fp32 student under other QAT settings)."""
    stored = out / "recipe.json"
    if not stored.exists():
        raise UserError(f"run folder {str(out)!r} holds trained artifacts but no recipe.json, so it cannot be checked "
                        "against this recipe; start a new run with --out NEW_DIR")
    doc = read_json(stored, "run recipe", "start a new run with --out NEW_DIR")
    try:
        before = Recipe.model_validate(doc)
    except ValueError as exn:  # pydantic's ValidationError is a ValueError
        why = (one_line(exn) or type(exn).__name__)[:200]
        raise UserError(f"run folder {str(out)!r}: its recipe.json is unreadable or from another version ({why}); "
                        "start a new run with --out NEW_DIR") from None
    # A stage's own settings matter only once it has left something to reuse; export and eval are always redone.
    made = {"distill": ("student_distill", "student_fp32", "checkpoints/distill"),
            "align": ("student_fp32", "checkpoints/align")}
    skip = {"name", "export"} | {k for k, marks in made.items() if not any((out / m).exists() for m in marks)}
    if not any(p.name.startswith("qat") for p in (out / "checkpoints").glob("*")):
        skip.add("qat")
    diff = recipe.first_difference(before, frozenset(skip))
    if diff:
        key, mine, theirs = diff
        show = lambda v: json.dumps(v, ensure_ascii=False)[:60]  # noqa: E731
        raise UserError(f"run folder {str(out)!r} was trained with another recipe: {key} is {show(theirs)} there but "
                        f"{show(mine)} in this recipe; resume it with the recipe it started with ({stored}), or start "
                        "a new run with --out NEW_DIR")


def search_inputs(recipe: Recipe) -> tuple:
    """What the search trains its proxies on: the recipe's data and its teacher."""
    return load_run_data(recipe.data, recipe.seed), load_teacher(recipe)


def search(recipe: Recipe, out: Path | None = None, table: Path | None = None):
    """`dcclip-compress search RECIPE`: -> (written files, the recipe with the winners filled in)."""
    from compress.pipeline.search import search as run_search

    return run_search(recipe, lambda: search_inputs(recipe), out, table)
