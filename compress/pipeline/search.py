"""The search workflow: load the recipe's data and teacher, search (compress/search/), and resolve `arch: search`
in a run to the winners."""
from __future__ import annotations

from pathlib import Path

from typing import Callable

from compress.progress import log
from compress.recipe import Recipe, load_recipe
from compress.search.resolve import check_found, search_recipe, with_winners


Load = Callable[[], tuple]  # -> (run data, teacher): loaded only when a search really runs


def search(recipe: Recipe, load: Load, out: Path | None = None, table: Path | None = None) -> tuple[dict[str, Path], Recipe]:
    """The written files and the recipe with the winners filled in. `load` gives the recipe's data and teacher
    (compress/pipeline/run.py owns loading the teacher: training the reference teacher is a run of its own)."""
    from compress.search.runner import check_searchable

    check_searchable(recipe)  # its one-line refusals come before the data and the teacher load
    if out is not None:  # a user's file of a name the search writes is refused now, not after the search
        from compress.readers import claim_outputs
        from compress.search.report import OUTPUT_FILES, is_search_summary

        claim_outputs(out, OUTPUT_FILES, is_search_summary, "search")
    log("[bold cyan]▶ search[/]: data, teacher")
    data, teacher = load()
    return search_recipe(recipe, data, teacher, out, table)


def resolve_search(recipe: Recipe, run_folder: Path, resume: bool, load: Load) -> Recipe:
    """`students.*.arch: search`: search first (or, resuming, reuse the run's search/best.yaml), then train the winner."""
    if "search" not in (recipe.students.image.arch, recipe.students.text.arch):
        return recipe
    best = run_folder / "search" / "best.yaml"
    if resume and best.is_file():
        log(f"resume: search winners from {best}")
        return check_found(recipe, with_winners(recipe, load_recipe(best)))
    _, found = search(recipe, load, run_folder / "search")
    return check_found(recipe, found)
