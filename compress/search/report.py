"""What a search leaves in runs/<name>/search/: candidates.jsonl, pareto.md + pareto.png, best.yaml, summary.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from compress.atomic import atomic_path, write_json, write_text
from compress.readers import read_json
from compress.recipe.schema import Recipe
from compress.search.proxy import mean_top1
from compress.search.runner import Row, TowerResult
from students.spaces import ImageCandidate


def pareto_front(rows: list[Row]) -> list[Row]:
    """Trained rows no other trained row beats on both int8 latency (lower) and mean proxy top-1 (higher)."""
    pts = [r for r in rows if r.proxy_top1 is not None and r.int8_ms is not None]
    front = []
    for r in pts:
        dominated = any(o is not r and o.int8_ms <= r.int8_ms and mean_top1(o.proxy_top1) >= mean_top1(r.proxy_top1)
                        and (o.int8_ms < r.int8_ms or mean_top1(o.proxy_top1) > mean_top1(r.proxy_top1)) for o in pts)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.int8_ms)


def best_recipe(recipe: Recipe, results: dict[str, TowerResult]) -> Recipe:
    """The recipe with each searched tower's winner filled in (arch: custom + spec); untouched towers stay as named."""
    students = recipe.students
    data = recipe.data
    image = results.get("image")
    if image is not None and image.winner is not None:
        c = image.winner.cand
        assert isinstance(c, ImageCandidate)
        students = students.model_copy(update={"image": students.image.model_validate({"arch": "custom", "spec": c.spec()})})
        data = data.model_copy(update={"image_size": c.image_size})
    text = results.get("text")
    if text is not None and text.winner is not None:
        c = text.winner.cand
        t = students.text.model_dump() | {"arch": "custom", "spec": c.spec(), "context_length": c.context_length}
        students = students.model_copy(update={"text": students.text.model_validate(t)})
    return recipe.model_copy(update={"students": students, "data": data})


def _md(results: dict[str, TowerResult]) -> str:
    lines = ["# Architecture search: latency vs proxy accuracy", ""]
    for tower, res in results.items():
        front = {id(r) for r in pareto_front(res.rows)}
        lines += [f"## {tower} tower (budget {res.budget_ms:g} ms int8)", "",
                  f"Winner: **{res.winner.name if res.winner else 'none'}**. Predictor error (predicted before measured): "
                  f"{json.dumps(res.predictor)}. Seconds: {json.dumps(res.seconds)}.", "",
                  "| candidate | family | params | MMACs | int8 ms | fp32 ms | proxy top-1 en | zh | steps | front | status |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|---|"]
        shown = sorted((r for r in res.rows if r.int8_ms is not None), key=lambda r: r.int8_ms)
        for r in shown:
            p = r.proxy_top1 or {}
            f = lambda x, s="{:.2f}": "" if x is None else s.format(x)  # noqa: E731
            lines.append(f"| {r.name} | {r.cand.family} | {r.params / 1e6:.2f}M | {r.macs / 1e6:.1f} | {f(r.int8_ms)} | "
                         f"{f(r.fp32_ms)} | {f(p.get('en'), '{:.3f}')} | {f(p.get('zh'), '{:.3f}')} | {r.proxy_steps or ''} | "
                         f"{'★' if id(r) in front else ''} | {r.status} |")
        unmeasured = [r for r in res.rows if r.int8_ms is None]
        lines += ["", f"{len(unmeasured)} more candidates were sized but not measured (pruned by the predictor or not "
                  "needed); see candidates.jsonl.", ""]
    return "\n".join(lines)


def _plot(results: dict[str, TowerResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (tower, res) in zip(axes[0], results.items()):
        trained = [r for r in res.rows if r.proxy_top1 is not None and r.int8_ms is not None]
        fams = sorted({r.cand.family for r in res.rows})
        for fam in fams:
            pts = [r for r in trained if r.cand.family == fam]
            ax.scatter([r.int8_ms for r in pts], [mean_top1(r.proxy_top1) for r in pts], label=fam, s=30)
        front = pareto_front(res.rows)
        ax.plot([r.int8_ms for r in front], [mean_top1(r.proxy_top1) for r in front], "k--", lw=1, label="Pareto front")
        ax.axvline(res.budget_ms, color="red", lw=1, label=f"budget {res.budget_ms:g} ms")
        if res.winner is not None and res.winner.proxy_top1 is not None:
            ax.scatter([res.winner.int8_ms], [mean_top1(res.winner.proxy_top1)], marker="*", s=200, c="gold",
                       edgecolors="k", label="winner", zorder=5)
        ax.set_xlabel("int8 .pte latency (ms, measured)")
        ax.set_ylabel("proxy zero-shot top-1 (mean of en, zh)")
        ax.set_title(f"{tower} tower")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


OUTPUT_FILES = ("summary.json", "candidates.jsonl", "pareto.md", "pareto.png", "best.yaml")


def is_search_summary(doc: dict) -> bool:
    """Whether summary.json is one `write_search` wrote."""
    return isinstance(doc, dict) and isinstance(doc.get("towers"), dict) and "seconds" in doc


def write_search(folder: Path, recipe: Recipe, results: dict[str, TowerResult], seconds: float) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r.as_dict() for res in results.values() for r in res.rows]
    write_text(folder / "candidates.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_text(folder / "pareto.md", _md(results))
    _plot(results, folder / "pareto.png")
    best = best_recipe(recipe, results)
    header = f"# {recipe.name}: the search's winners filled in (dcclip-compress search). Train it with `dcclip-compress run`.\n"
    write_text(folder / "best.yaml", header + yaml.safe_dump(best.model_dump(), sort_keys=False, allow_unicode=True))
    write_json(folder / "summary.json", {
        "seconds": round(seconds, 1),
        "towers": {t: {"budget_ms": r.budget_ms, "winner": r.winner.as_dict() if r.winner else None,
                       "candidates": len(r.rows), "families": sorted({x.cand.family for x in r.rows}),
                       "measured": sum(x.int8_ms is not None for x in r.rows),
                       "trained": sum(x.proxy_top1 is not None for x in r.rows),
                       "predictor_error": r.predictor, "seconds": r.seconds} for t, r in results.items()},
    })
    return {k: folder / n for k, n in (("candidates", "candidates.jsonl"), ("pareto", "pareto.md"),
                                       ("plot", "pareto.png"), ("best", "best.yaml"), ("summary", "summary.json"))}


def load_best(folder: Path) -> dict[str, Any]:
    return read_json(folder / "summary.json", "search summary", "run the search again (`dcclip-compress search RECIPE`)")
