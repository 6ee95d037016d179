"""The bench report as files: bench.json (the `BenchReport`), bench.md (a table per method, the top ops per
program) and bench.png (median and p90 per method)."""
from __future__ import annotations

from pathlib import Path

from compress.atomic import atomic_path, write_json, write_text
from compress.home import runs_dir
from mobile_export.bench.schema import BenchReport


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: BenchReport) -> str:
    d = report.device
    lines = [
        f"Device: {d.name} ({d.model or 'unknown'}; {d.os or '?'}; {d.abi or '?'}; {d.cores or '?'} cores; "
        f"threads {d.threads or 'default'}); runs {report.settings.runs}, warm-up {report.settings.warmup}",
        "",
        "| program | method | source | load ms | median ms | p90 ms | trimmed mean ms | mean ms | peak RSS MB* | MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.models:
        rss = m.peak_rss_mb if m.peak_rss_mb is not None else m.ram_pss_usage_mb
        for r in m.methods:
            lines.append(f"| {m.model} | {r.method} | {r.source} | {_fmt(r.model_load_time_ms, 1)} | {_fmt(r.median_ms)} | "
                         f"{_fmt(r.p90_ms)} | {_fmt(r.trimmean_ms)} | {_fmt(r.avg_ms)} | {_fmt(rss, 1)} | "
                         f"{m.bytes / 1e6:.2f} |")
    lines += ["", "*host: high-water mark of the bench process (Python and torch included) during load and runs; "
              "phone: minibench's PSS increase."]
    for m in report.models:
        if not m.top_ops:
            continue
        lines += ["", f"Top ops of {m.model} (ETDump, median of one execution):", "",
                  "| op | kind | count | ms | share |", "|---|---|---:|---:|---:|"]
        lines += [f"| {o.event} | {o.kind} | {o.occurrences} | {o.median_ms:.3f} | {o.share:.1%} |" for o in m.top_ops]
    return "\n".join(lines) + "\n"


def plot(report: BenchReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{m.model}.{r.method}", r.median_ms if r.median_ms is not None else r.trimmean_ms, r.p90_ms)
            for m in report.models for r in m.methods]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
    labels = [r[0] for r in rows]
    medians = [r[1] for r in rows]
    ax.barh(labels, medians, color="#4c72b0", label="median")
    p90 = [(i, r[2]) for i, r in enumerate(rows) if r[2] is not None]
    if p90:
        ax.scatter([v for _, v in p90], [i for i, _ in p90], marker="|", s=200, color="black", label="p90")
    ax.invert_yaxis()
    ax.set_xlabel("latency per call (ms)")
    ax.set_title(f"{report.device.name}: {report.device.model or ''}"[:80], fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_report(report: BenchReport, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "bench.json", "md": folder / "bench.md", "png": folder / "bench.png"}
    write_json(paths["json"], report.model_dump(by_alias=True, mode="json"))
    write_text(paths["md"], markdown(report))
    plot(report, paths["png"])
    return paths


def bench_and_report(target: Path, device: str = "host", runs: int = 20, warmup: int = 3, threads: int | None = None,
                     out: Path | None = None) -> tuple[BenchReport, dict[str, Path]]:
    """`dcclip-compress bench`: time every program of a bundle (or one `.pte`) on `device` and write bench.json,
    bench.md and bench.png (default folder: runs/bench/<bundle or .pte name>)."""
    import re

    from mobile_export.bench.run import run_bench

    from compress.readers import claim_outputs

    def ours(doc: dict) -> bool:
        return isinstance(doc, dict) and str(doc.get("schema_version", "")).startswith("dcclip-compress/bench")

    name = target.stem if target.suffix == ".pte" else target.resolve().name
    folder = out or runs_dir("bench") / re.sub(r"[^\w.-]+", "_", name)
    claim_outputs(folder, ("bench.json", "bench.md", "bench.png"), ours, "bench")  # before the timing, not after
    report = run_bench(target, device, runs=runs, warmup=warmup, threads=threads)
    return report, write_report(report, folder)
