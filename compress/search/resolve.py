"""Search and hand back the recipe with the winners filled in (the `search` command and the `arch: search` hook of
`run` both come through here, from compress/pipeline/search.py, which loads the data and the teacher)."""
from __future__ import annotations

import time
from pathlib import Path

from compress.home import runs_dir
from compress.recipe.schema import Recipe


def search_recipe(recipe: Recipe, data, teacher, out: Path | None = None,
                  table: Path | None = None) -> tuple[dict[str, Path], Recipe]:
    """Run the search for every tower with a budget; returns the written files and the best recipe."""
    from compress.search.report import best_recipe, write_search
    from compress.search.runner import run_search

    folder = out or runs_dir(recipe.name, "search")
    start = time.perf_counter()
    results = run_search(recipe, folder, data, teacher, table)
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


def check_found(recipe: Recipe, found: Recipe) -> Recipe:
    """The winners, or one line saying which tower's budget nothing fits."""
    from compress.errors import UserError

    for tower in ("image", "text"):
        if getattr(recipe.students, tower).arch == "search" and getattr(found.students, tower).arch == "search":
            raise UserError(f"search.budget.{tower}: no candidate fits the budget; raise it or widen search.space.{tower}")
    return found
