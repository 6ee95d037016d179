"""The `eval` report: one table per suite with en and zh side by side per model, deltas against the first model
(in points), a grouped bar chart, and the JSON everything came from. Pure functions of the result dict."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from compress.atomic import atomic_path, write_json, write_text

SUITE_TITLES = {
    "elevater": "ELEVATER zero-shot classification",
    "emoji": "emoji-zh-en zero-shot classification",
    "retrieval": "Retrieval (mean of R@1/5/10, both directions)",
}
METRIC_LABELS = {"accuracy": "top-1", "mean_per_class": "mean-per-class", "roc_auc": "ROC AUC",
                 "11point_mAP": "11-pt mAP", "top1": "top-1", "mean_recall": "mean recall"}


@dataclass
class Row:
    suite: str
    name: str
    metric: str
    values: dict[str, dict[str, float]]  # model label -> lang -> score in [0, 1]


def result_rows(result: dict) -> list[Row]:
    labels, langs = [m["label"] for m in result["models"]], result["langs"]
    rows: list[Row] = []
    per = result["results"]
    for suite in ("elevater", "emoji", "retrieval"):
        if suite not in per:
            continue
        first = per[suite].get(labels[0], {})
        for name, entry in first.items():
            if suite == "elevater":
                metric, pick = entry["metric"], (lambda e, lang: e[lang]["score"])
            elif suite == "emoji":
                metric, pick = "top1", (lambda e, lang: e[lang]["top1"])
            else:
                metric, pick = "mean_recall", (lambda e, lang: e[lang]["mean_recall"])
            values = {}
            for label in labels:
                e = per[suite].get(label, {}).get(name)
                if e is not None:
                    values[label] = {lang: pick(e, lang) for lang in langs if lang in e}
            rows.append(Row(suite, name, metric, values))
    return rows


def _cell(value: float | None, base: float | None, is_base: bool) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}"
    if not is_base and base is not None:
        text += f" ({100 * (value - base):+.1f})"
    return text


def markdown(result: dict) -> str:
    labels, langs = [m["label"] for m in result["models"]], result["langs"]
    out = ["| model | params | input |", "|---|---|---|"]
    out += [f"| {m['label']} | {m['params'] / 1e6:.2f}M | {m['image_size']} px |" for m in result["models"]]
    rows = result_rows(result)
    for suite in ("elevater", "emoji", "retrieval"):
        suite_rows = [r for r in rows if r.suite == suite]
        skipped = result.get("skipped", {}).get(suite, {})
        if not suite_rows and not skipped:
            continue
        out += ["", f"### {SUITE_TITLES[suite]} (%; in brackets: points vs {labels[0]})", ""]
        if suite_rows:
            head = ["dataset", "metric"] + [f"{label} {lang}" for label in labels for lang in langs]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in suite_rows + (_mean_rows(suite_rows, labels, langs) if suite == "elevater" else []):
                base = r.values.get(labels[0], {})
                cells = [_cell(r.values.get(label, {}).get(lang), base.get(lang), i == 0)
                         for i, label in enumerate(labels) for lang in langs]
                out.append(f"| {r.name} | {METRIC_LABELS.get(r.metric, r.metric)} | " + " | ".join(cells) + " |")
        for label in labels[:1]:
            for name, entry in result["results"].get(suite, {}).get(label, {}).items():
                if isinstance(entry, dict) and entry.get("warning"):
                    out.append(f"- {name}: read through {entry['layout']}; not ELEVATER's test set: {entry['warning']}")
        missing = [name for name, why in skipped.items() if why.endswith("does not exist")]
        if len(missing) > 1:
            out.append(f"- skipped {len(missing)} datasets not found under {result.get('data_root')}: {', '.join(missing)} "
                       "(layouts: docs/evaluation.md)")
        for name, why in skipped.items():
            if name not in missing or len(missing) == 1:
                out.append(f"- skipped {name}: {why}")
    if "retrieval" in result["results"]:
        out += ["", "### Retrieval detail (%)", "", "| set | model | lang | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 |",
                "|---|---|---|---|---|---|---|---|---|"]
        for label in labels:
            for name, entry in result["results"]["retrieval"].get(label, {}).items():
                for lang in langs:
                    if lang in entry:
                        e = entry[lang]
                        vals = [e[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
                        out.append(f"| {name} | {label} | {lang} | " + " | ".join(f"{100 * v:.1f}" for v in vals) + " |")
    return "\n".join(out) + "\n"


def _mean_rows(rows: Sequence[Row], labels: Sequence[str], langs: Sequence[str]) -> list[Row]:
    """The unweighted mean over datasets every model has (ELEVATER's headline number); none for a single row."""
    if len(rows) < 2:
        return []
    values = {}
    for label in labels:
        for lang in langs:
            vs = [r.values.get(label, {}).get(lang) for r in rows]
            if all(v is not None for v in vs):
                values.setdefault(label, {})[lang] = sum(vs) / len(vs)
    return [Row(rows[0].suite, f"**mean of {len(rows)}**", "", values)]


def bar_chart(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, langs = [m["label"] for m in result["models"]], result["langs"]
    rows = result_rows(result)
    series = [(label, lang) for label in labels for lang in langs]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) * max(1, len(series)) ** 0.5 + 2) + 1.5, 4.2))
    for j, (label, lang) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ys = [100 * r.values.get(label, {}).get(lang, float("nan")) for r in rows]
        ax.bar(xs, ys, width, label=f"{label} {lang}", hatch="//" if lang == "zh" else None,
               color=f"C{labels.index(label)}", alpha=0.9 if lang == "en" else 0.6)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r.suite}/{r.name}" if r.suite != "elevater" else r.name for r in rows], rotation=45,
                       ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title("dcclip-compress eval: en (solid) vs zh (hatched)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


REPORT_FILES = ("eval.json", "eval.md", "eval.png")


def is_eval_report(doc: dict) -> bool:
    """Whether eval.json is one `write_report` wrote (its shape: models, suites, results)."""
    return isinstance(doc, dict) and {"models", "suites", "results"} <= set(doc)


def write_report(result: dict, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "eval.json", "md": folder / "eval.md"}
    write_json(paths["json"], result)
    write_text(paths["md"], "# dcclip-compress eval\n\n" + markdown(result))
    if result_rows(result):
        paths["png"] = bar_chart(result, folder / "eval.png")
    return paths
