"""Latency reports for `.pte` programs, on this host or on a device, with the metric names of ExecuTorch's Android
benchmark app (minibench: `model_load_time(ms)`, `avg_inference_latency(ms)`, `trimmean_inference_latency(ms)`,
`ram_pss_usage(mb)`, `load_status`), so host, phone and compiler-estimate numbers land in the same report columns.

`dcclip-compress bench` takes an export bundle (every program in it) or a bare `.pte` from anywhere: inputs come from
the method's own metadata, all-ones tensors of the exported shapes and dtypes, as minibench feeds them. Where the
numbers come from is a small registry of device runners (`@register_device`): `host`, `adb[:SERIAL]`; an NPU
compiler's estimate plugs in the same way, with one function that returns the same `ModelResult`s.

Output: `BenchReport` (pydantic; its JSON Schema is `BenchReport.model_json_schema(by_alias=True)`) as bench.json,
a markdown table (bench.md) and a chart (bench.png).
"""
from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from compress.errors import UserError
from mobile_export.pte_check import check_pte, sha256_file
from mobile_export.runtime import PteModule, _runtime, set_threadpool, threadpool_size

SCHEMA_VERSION = "dcclip-compress/bench/1"
TOP_OPS = 12


# ---------------------------------------------------------------------------------------------------- schema
class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", protected_namespaces=())


class TensorSpec(_Model):
    shape: list[int]
    dtype: str


class MethodLatency(_Model):
    """One method of one program. Field names with units are minibench's (median and p90 are ours: minibench
    reports only the mean and the trimmed mean, so they are null for a phone)."""

    method: str
    source: Literal["measured", "estimate"] = "measured"  # estimate: a compiler's cycle model, not a clock
    inputs: list[TensorSpec] = []
    load_status: int = 0
    model_load_time_ms: float | None = Field(alias="model_load_time(ms)")
    avg_ms: float = Field(alias="avg_inference_latency(ms)")
    trimmean_ms: float = Field(alias="trimmean_inference_latency(ms)")
    median_ms: float | None = Field(None, alias="median_inference_latency(ms)")
    p90_ms: float | None = Field(None, alias="p90_inference_latency(ms)")
    runs: int
    latencies_ms: list[float] = []


class OpTime(_Model):
    """An ETDump event, summed over its occurrences in one execution: `kind` is portable (an ExecuTorch CPU kernel,
    i.e. what the delegate left out), delegate_call (entering an XNNPACK subgraph) or delegated (an op inside one)."""

    event: str
    kind: Literal["portable", "delegate_call", "delegated"]
    occurrences: int
    median_ms: float
    share: float  # of the method's median execution time (delegated ops overlap their delegate_call)


class ModelResult(_Model):
    model: str  # file stem, e.g. image_int8
    path: str
    bytes: int
    sha256: str
    methods: list[MethodLatency]
    peak_rss_mb: float | None = Field(None, alias="peak_rss(mb)")  # process high-water mark during load + runs
    rss_before_load_mb: float | None = Field(None, alias="rss_before_load(mb)")
    ram_pss_usage_mb: float | None = Field(None, alias="ram_pss_usage(mb)")  # minibench's (phone) figure
    top_ops: list[OpTime] | None = None  # None: the device gives no ETDump
    notes: list[str] = []


class DeviceInfo(_Model):
    name: str  # host, adb:SERIAL, ...
    kind: str
    model: str | None = None  # CPU model / phone model
    os: str | None = None
    abi: str | None = None
    cores: int | None = None
    threads: int | None = None  # runtime threadpool size used
    versions: dict[str, str | None] = {}
    extra: dict[str, Any] = {}


class BenchSettings(_Model):
    runs: int = Field(ge=1)
    warmup: int = Field(ge=0)
    threads: int | None = Field(None, ge=1)


class BenchReport(_Model):
    schema_version: Literal["dcclip-compress/bench/1"] = SCHEMA_VERSION
    created: str
    device: DeviceInfo
    settings: BenchSettings
    models: list[ModelResult]


# ---------------------------------------------------------------------------------------------------- statistics
def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_latencies(latencies_ms: list[float], load_ms: float) -> dict[str, Any]:
    """Minibench's definitions: trimmed mean over the middle 80% (sorted[n/10 : 9n/10]); plus median and p90."""
    ordered = sorted(latencies_ms)
    n = len(ordered)
    trimmed = ordered[n // 10 : n * 9 // 10] or ordered
    return {
        "model_load_time(ms)": load_ms,
        "avg_inference_latency(ms)": statistics.fmean(ordered),
        "trimmean_inference_latency(ms)": statistics.fmean(trimmed),
        "median_inference_latency(ms)": statistics.median(ordered),
        "p90_inference_latency(ms)": percentile(ordered, 0.9),
        "runs": n,
    }


def _time_runs(module: PteModule, row: tuple[torch.Tensor, ...], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        module.run_once(*row)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        module.run_once(*row)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def _timed_load(path: Path, method: str = "forward") -> tuple[PteModule, float]:
    """Load time of program + method, as minibench measures it (the file check and one-time runtime set-up are
    done before the clock starts)."""
    check_pte(path)
    _runtime()
    start = time.perf_counter()
    module = PteModule(path, method, verify_file=False)
    return module, (time.perf_counter() - start) * 1e3


def host_latency(
    path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 20, warmup: int = 3
) -> dict[str, Any]:
    """Load time (program + method, as minibench measures it) and per-call latency of the batch-1 method."""
    if runs < 1 or warmup < 0:
        raise UserError(f"bench: runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    module, load_ms = _timed_load(Path(path))
    row = tuple(t[:1].contiguous() for t in inputs)
    return summarize_latencies(_time_runs(module, row, runs, warmup), load_ms)


def profile_ops(path: str | os.PathLike, inputs: tuple[torch.Tensor, ...], runs: int = 5,
                method: str = "forward") -> list[dict[str, Any]]:
    """Per-op time from an ETDump (ExecuTorch devtools), slowest first: portable-kernel ops (what the delegate left
    out), each XNNPACK delegate call, and the XNNPACK operators inside it. Times are medians over `runs`."""
    import tempfile
    import warnings

    from executorch.devtools import Inspector

    module = PteModule(path, method, enable_etdump=True)
    row = tuple(t[:1].contiguous() for t in inputs)
    for _ in range(runs):
        module.run_once(*row)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Output Buffer not found": we ask for timings only, not tensor dumps
        etdump = os.path.join(tmp, "run.etdp")
        module.program.write_etdump_result_to_file(etdump, os.path.join(tmp, "debug.bin"))
        inspector = Inspector(etdump_path=etdump)
    rows = []
    for block in inspector.event_blocks:
        for event in block.events:
            if event.perf_data is None or event.name in ("Program::load_method", "Method::init"):
                continue
            rows.append({
                "event": event.name,
                "delegated": bool(event.is_delegated_op),
                "median_ms": float(event.perf_data.p50),
                "calls": len(event.perf_data.raw),
            })
    return sorted(rows, key=lambda r: -r["median_ms"])


def top_ops(rows: list[dict[str, Any]], n: int = TOP_OPS) -> list[OpTime]:
    """`profile_ops` rows grouped by op: time summed over an execution's occurrences, share of `Method::execute`."""
    total = next((r["median_ms"] for r in rows if r["event"] == "Method::execute"), None)
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["event"] in ("Method::execute", "OPERATOR_CALL"):  # the total; the wrapper of each native_call_* op
            continue
        kind = "delegated" if r["delegated"] else "delegate_call" if r["event"] == "DELEGATE_CALL" else "portable"
        groups.setdefault((r["event"], kind), []).append(r["median_ms"])
    total = total or sum(v for (_, kind), vs in groups.items() if kind != "delegated" for v in vs) or 1.0
    ops = [OpTime(event=e, kind=k, occurrences=len(v), median_ms=sum(v), share=sum(v) / total)
           for (e, k), v in groups.items()]
    return sorted(ops, key=lambda o: -o.median_ms)[:n]


# ---------------------------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the VmHWM high-water mark, so the peak is this model's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------- inputs
def collect_programs(target: Path) -> list[Path]:
    """A bare `.pte`, or every program an export bundle lists (bundle.json / manifest.json), else its *.pte."""
    if target.is_file() or target.suffix == ".pte":
        check_pte(target)
        return [target]
    if not target.is_dir():
        raise UserError(f"bench: {str(target)!r} not found; pass a .pte or an export bundle folder")
    names: list[str] = []
    manifest, bundle = target / "manifest.json", target / "bundle.json"
    try:
        if manifest.is_file():
            names = list(json.loads(manifest.read_text(encoding="utf-8")).get("programs", {}))
        if not names and bundle.is_file():
            files = json.loads(bundle.read_text(encoding="utf-8")).get("files", {})
            names = [n for towers in files.values() for n in towers.values()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserError(f"bench: the bundle description in {str(target)!r} is not valid JSON; re-export it") from None
    if not names:
        names = sorted(p.name for p in target.glob("*.pte"))
    if not names:
        raise UserError(f"bench: {str(target)!r} holds no .pte; pass a .pte or an export bundle folder")
    paths = [target / n for n in names]
    for p in paths:
        check_pte(p)
    return paths


def timed_methods(module: PteModule) -> list[str]:
    """Methods that take inputs (the model); constant methods (embedded metadata) take none."""
    names = []
    for name in sorted(module.method_names):
        if module.program.metadata(name).num_inputs() > 0:
            names.append(name)
    return names


def _inputs_of(module: PteModule) -> list[TensorSpec]:
    return [TensorSpec(shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch.")) for t in module.default_inputs()]


# ---------------------------------------------------------------------------------------------------- devices
@dataclass
class BenchRun:
    device: DeviceInfo
    models: list[ModelResult]


DeviceRunner = Callable[[str | None, list[Path], BenchSettings], BenchRun]
DEVICES: dict[str, DeviceRunner] = {}


def register_device(name: str) -> Callable[[DeviceRunner], DeviceRunner]:
    """Decorator: `fn(arg, programs, settings) -> BenchRun` answers `--device NAME[:ARG]`."""

    def wrap(fn: DeviceRunner) -> DeviceRunner:
        DEVICES[name] = fn
        return fn

    return wrap


def parse_device(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    if name not in DEVICES:
        close = difflib.get_close_matches(name, list(DEVICES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"bench: {spec!r} is not a known device; {hint}known: "
                        f"{', '.join(n + ('[:SERIAL]' if n == 'adb' else '') for n in sorted(DEVICES))}")
    return name, arg or None


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    out = {}
    for dist in ("executorch", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def bench_on_host(path: Path, settings: BenchSettings) -> ModelResult:
    """Every input-taking method of one program: load time, latencies, peak RSS, and the ETDump top ops."""
    notes = []
    reset = _reset_peak_rss()
    if not reset:
        notes.append("peak RSS is the process high-water mark (could not reset /proc/self/clear_refs)")
    rss_before = _status_kb("VmRSS")
    module, first_load_ms = _timed_load(path)
    methods = timed_methods(module)
    results, ops = [], None
    for i, name in enumerate(methods):
        if name != module.method_name:
            module, load_ms = _timed_load(path, name)
        else:
            load_ms = first_load_ms
        row = module.default_inputs()
        latencies = _time_runs(module, row, settings.runs, settings.warmup)
        stats = summarize_latencies(latencies, load_ms)
        results.append(MethodLatency(method=name, inputs=_inputs_of(module), latencies_ms=latencies,
                                     **{k: v for k, v in stats.items()}))
    peak = _status_kb("VmHWM")
    if methods:
        ops = top_ops(profile_ops(path, PteModule(path, methods[0], verify_file=False).default_inputs(),
                                  runs=min(settings.runs, 10), method=methods[0]))
        if len(methods) > 1:
            notes.append(f"top ops are for {methods[0]!r}")
    return ModelResult(
        model=path.stem, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path), methods=results,
        top_ops=ops, notes=notes,
        **{"peak_rss(mb)": peak / 1024 if peak else None, "rss_before_load(mb)": rss_before / 1024 if rss_before else None},
    )


@register_device("host")
def _host(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """This machine's ExecuTorch runtime (the same kernels and XNNPACK delegate a phone uses, x86 micro-kernels)."""
    if arg:
        raise UserError(f"bench: the host device takes no argument (got 'host:{arg}')")
    set_threadpool(settings.threads)
    threads = threadpool_size()
    models = [bench_on_host(p, settings) for p in programs]
    device = DeviceInfo(
        name="host", kind="host", model=_cpu_model(), os=f"{platform.system()} {platform.release()}",
        abi=platform.machine(), cores=os.cpu_count(), threads=threads, versions=_versions(),
    )
    return BenchRun(device, models)


@register_device("adb")
def _adb(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """An Android phone timed by ExecuTorch's minibench app, through `mobile_export.bench.adb.AdbDevice`."""
    from mobile_export.bench.adb import AdbDevice

    device = AdbDevice(arg)
    models = []
    for path in programs:
        remote = f"/data/local/tmp/dcclip-bench/{path.stem}/{path.name}"  # minibench times the only .pte in a folder
        device.push(path, remote)
        metrics = device.run_benchmark(remote, settings.runs)
        module = PteModule(path)
        models.append(ModelResult(
            model=path.stem, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
            methods=[MethodLatency(
                method="forward", inputs=_inputs_of(module), load_status=int(metrics.get("load_status", 0)),
                runs=settings.runs, **{k: metrics.get(k) for k in (
                    "model_load_time(ms)", "avg_inference_latency(ms)", "trimmean_inference_latency(ms)")},
            )],
            top_ops=None, notes=["minibench runs its own warm-up and thread count; it reports mean and trimmed mean only"],
            **{"ram_pss_usage(mb)": metrics.get("ram_pss_usage(mb)")},
        ))
    info = device.info() if hasattr(device, "info") else {}
    return BenchRun(DeviceInfo(name=device.name, kind="adb", model=info.get("model"), os=info.get("os"),
                               abi=info.get("abi"), cores=info.get("cores"), extra=info), models)


@register_device("vela")
def _vela(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """Arm Ethos-U: Vela's cycle estimate stored in the `.pte` at export (`source: estimate`; see mobile_export/ethosu.py)."""
    from mobile_export.lower.ethosu import bench_vela

    return bench_vela(arg, programs, settings)


def run_bench(target: Path, device: str = "host", runs: int = 20, warmup: int = 3,
              threads: int | None = None) -> BenchReport:
    if runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise UserError(f"bench: runs must be >= 1, warmup >= 0 and threads >= 1 (got {runs}, {warmup}, {threads})")
    name, arg = parse_device(device)
    programs = collect_programs(Path(target))
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads)
    result = DEVICES[name](arg, programs, settings)
    return BenchReport(created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       device=result.device, settings=settings, models=result.models)


# ---------------------------------------------------------------------------------------------------- reports
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

    from compress.atomic import atomic_path

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
    from compress.atomic import write_json, write_text

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "bench.json", "md": folder / "bench.md", "png": folder / "bench.png"}
    write_json(paths["json"], report.model_dump(by_alias=True, mode="json"))
    write_text(paths["md"], markdown(report))
    plot(report, paths["png"])
    return paths
