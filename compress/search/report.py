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
    """Trained rows no other trained row beats on both int8 latency (lower, in reference units) and mean proxy top-1
    (higher)."""
    pts = [r for r in rows if r.proxy_top1 is not None and r.int8 is not None]
    front = []
    for r in pts:
        dominated = any(o is not r and o.int8_ratio <= r.int8_ratio and mean_top1(o.proxy_top1) >= mean_top1(r.proxy_top1)
                        and (o.int8_ratio < r.int8_ratio or mean_top1(o.proxy_top1) > mean_top1(r.proxy_top1)) for o in pts)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.int8_ratio)


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
    lines = ["# Architecture search: latency vs proxy accuracy", "",
             "Latency is in reference units: the candidate's int8 `.pte` median over the reference's, the two timed in "
             "alternating rounds in the same sitting (ms are this machine's, for scale). The int8 speed-up is fp32 / "
             "int8 in those units.", ""]
    f = lambda x, s="{:.2f}": "" if x is None else s.format(x)  # noqa: E731
    for tower, res in results.items():
        front = {id(r) for r in pareto_front(res.rows)}
        p = res.predictor
        fam = p.get("family_fit") or {}
        lines += [f"## {tower} tower (budget {res.budget.describe()})", "",
                  f"Winner: **{res.winner.name if res.winner else 'none'}**"
                  + (f", int8 {res.winner.int8_ratio:.2f}× the reference, int8 speed-up {f(res.winner.int8_speedup)}×."
                     if res.winner else "."), "",
                  f"Latency predictor (log-linear per family; each prediction made before its candidate was measured): "
                  f"median error {f(p.get('median_abs_rel'), '{:.0%}')}, mean {f(p.get('mean_abs_rel'), '{:.0%}')}, max "
                  f"{f(p.get('max_abs_rel'), '{:.0%}')} over {p.get('n', 0)} predictions; from a family's own fit "
                  f"(the only ones that may prune): median {f(fam.get('median_abs_rel'), '{:.0%}')}, max "
                  f"{f(fam.get('max_abs_rel'), '{:.0%}')} over {fam.get('n', 0)}. It pruned {p.get('pruned', 0)} "
                  f"candidates, each predicted by its family's fit beyond budget × (1 + that error band"
                  + (f", {p['band']:.0%})." if p.get("band") is not None else "); it never had enough checked predictions to prune."),
                  "", f"Seconds: {json.dumps(res.seconds)}.", "",
                  "| candidate | family | params | MMACs | int8 ×ref | int8 ms | fp32 ms | int8 speed-up | proxy top-1 en | zh | steps | front | status |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|"]
        shown = sorted((r for r in res.rows if r.int8 is not None), key=lambda r: r.int8_ratio)
        for r in shown:
            t = r.proxy_top1 or {}
            lines.append(f"| {r.name} | {r.cand.family} | {r.params / 1e6:.2f}M | {r.macs / 1e6:.1f} | {f(r.int8_ratio)} | "
                         f"{f(r.int8_ms, '{:.3f}')} | {f(r.fp32_ms, '{:.3f}')} | {f(r.int8_speedup)} | "
                         f"{f(t.get('en'), '{:.3f}')} | {f(t.get('zh'), '{:.3f}')} | {r.proxy_steps or ''} | "
                         f"{'★' if id(r) in front else ''} | {r.status} |")
        unmeasured = [r for r in res.rows if r.int8 is None]
        lines += ["", f"{len(unmeasured)} more candidates were sized but not measured (pruned by the predictor or not "
                  "needed); see candidates.jsonl.", ""]
        if res.ops:
            lines += ["### What int8 leaves in float, per family", "",
                      "Ops the int8 quantizer does not annotate (they run in float: in XNNPACK's fp32 kernels, or outside "
                      "the delegate), and ops outside the XNNPACK delegate altogether, the most any measured candidate "
                      "of the family has.", "",
                      "| family | measured | int8 speed-up | float ops in the int8 program | outside the delegate |",
                      "|---|---:|---|---|---|"]
            for fam, o in sorted(res.ops.items()):
                sp = o.get("int8_speedup")
                ops = lambda d: ", ".join(f"{k} {v}" for k, v in d.items()) or "none"  # noqa: E731
                speed = "" if not sp else "{:.2f}–{:.2f}×".format(sp["min"], sp["max"])
                lines.append(f"| {fam} | {o['measured']} | {speed} | "
                             f"{ops(o['float_ops'])} | {ops(o['non_delegated_ops'])} |")
            lines.append("")
    return "\n".join(lines)


def _plot(results: dict[str, TowerResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8.5), squeeze=False)
    for col, (tower, res) in enumerate(results.items()):
        ax, ax2 = axes[0][col], axes[1][col]
        trained = [r for r in res.rows if r.proxy_top1 is not None and r.int8 is not None]
        measured = [r for r in res.rows if r.int8 is not None]
        fams = sorted({r.cand.family for r in res.rows})
        for i, fam in enumerate(fams):
            color = f"C{i}"
            pts = [r for r in trained if r.cand.family == fam]
            ax.scatter([r.int8_ratio for r in pts], [100 * mean_top1(r.proxy_top1) for r in pts], label=fam, s=30, c=color)
            m = [r for r in measured if r.cand.family == fam and r.int8_speedup is not None]
            ax2.scatter([r.int8_ratio for r in m], [r.int8_speedup for r in m], label=fam, s=30, c=color)
        front = pareto_front(res.rows)
        ax.plot([r.int8_ratio for r in front], [100 * mean_top1(r.proxy_top1) for r in front], "k--", lw=1,
                label="Pareto front")
        for a in (ax, ax2):
            a.axvline(res.budget.factor, color="red", lw=1, label="budget")
        if res.winner is not None and res.winner.proxy_top1 is not None:
            ax.scatter([res.winner.int8_ratio], [100 * mean_top1(res.winner.proxy_top1)], marker="*", s=200, c="gold",
                       edgecolors="k", label="winner", zorder=5)
            if res.winner.int8_speedup is not None:
                ax2.scatter([res.winner.int8_ratio], [res.winner.int8_speedup], marker="*", s=200, c="gold",
                            edgecolors="k", label="winner", zorder=5)
        ax2.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel(f"int8 .pte latency / {res.budget.reference} int8 (measured, same sitting)")
        ax.set_ylabel("proxy zero-shot top-1 % (mean of en, zh)")
        ax.set_title(f"{tower} tower")
        ax2.set_xlabel(f"int8 .pte latency / {res.budget.reference} int8")
        ax2.set_ylabel("int8 speed-up (fp32 / int8)")
        ax.legend(fontsize=7)
        ax2.legend(fontsize=7)
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
        "towers": {t: {"budget": {"factor": r.budget.factor, "ms": r.budget.ms, "reference": r.budget.reference,
                              "reference_ms": r.budget.reference_ms, "text": r.budget.describe()},
                       "reference": r.reference, "winner": r.winner.as_dict() if r.winner else None,
                       "candidates": len(r.rows), "families": sorted({x.cand.family for x in r.rows}),
                       "measured": sum(x.int8_ms is not None for x in r.rows),
                       "trained": sum(x.proxy_top1 is not None for x in r.rows),
                       "predictor_error": r.predictor, "ops_by_family": r.ops,
                       "seconds": r.seconds} for t, r in results.items()},
    })
    return {k: folder / n for k, n in (("candidates", "candidates.jsonl"), ("pareto", "pareto.md"),
                                       ("plot", "pareto.png"), ("best", "best.yaml"), ("summary", "summary.json"))}


def load_best(folder: Path) -> dict[str, Any]:
    return read_json(folder / "summary.json", "search summary", "run the search again (`dcclip-compress search RECIPE`)")
