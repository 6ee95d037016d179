"""`dcclip-compress search RECIPE` and the `arch: search` hook of `run`: search, write runs/<name>/search/, and hand
back the recipe with the winners filled in."""
from __future__ import annotations

import time
from pathlib import Path

from compress.recipe.schema import Recipe, load_recipe


def search_recipe(recipe: Recipe, out: Path | None = None, table: Path | None = None) -> tuple[dict[str, Path], Recipe]:
    """Run the search for every tower with a budget; returns the written files and the best recipe."""
    from compress.search.report import best_recipe, write_search
    from compress.search.runner import run_search

    folder = out or Path("runs") / recipe.name / "search"
    start = time.perf_counter()
    results = run_search(recipe, folder, table)
    paths = write_search(folder, recipe, results, time.perf_counter() - start)
    return paths, best_recipe(recipe, results)


def with_winners(recipe: Recipe, best: Recipe) -> Recipe:
    """`recipe` with the searched towers (and, for a searched image tower, the input size) taken from `best`.

    Why not `best` itself: it is the recipe as it was when the search ran, so a resumed run (`--resume --set qat.lr=..`
    or an edited recipe) would silently train with the old settings."""
    students, data = recipe.students, recipe.data
    for tower in ("image", "text"):
        if getattr(recipe.students, tower).arch == "search":
            students = students.model_copy(update={tower: getattr(best.students, tower)})
    if recipe.students.image.arch == "search":
        data = data.model_copy(update={"image_size": best.data.image_size})
    return recipe.model_copy(update={"students": students, "data": data})


def resolve_search(recipe: Recipe, run_folder: Path, resume: bool) -> Recipe:
    """`students.*.arch: search`: search first (or, resuming, reuse the run's search/best.yaml), then train the winner."""
    if "search" not in (recipe.students.image.arch, recipe.students.text.arch):
        return recipe
    from compress.errors import UserError
    from compress.progress import log

    best = run_folder / "search" / "best.yaml"
    if resume and best.is_file():
        log(f"resume: search winners from {best}")
        found = with_winners(recipe, load_recipe(best))
    else:
        _, found = search_recipe(recipe, run_folder / "search")
    for tower in ("image", "text"):
        if getattr(recipe.students, tower).arch == "search" and getattr(found.students, tower).arch == "search":
            raise UserError(f"search.budget_ms.{tower}: no candidate fits the budget; raise it or widen search.space.{tower}")
    return found
