"""`bench --device host`: this machine's ExecuTorch runtime (the same kernels and XNNPACK delegate a phone uses, x86
micro-kernels). Every input-taking method of each program: load time and latencies (mobile_export.timing), the
process's peak RSS, and the ETDump top ops.

A program this runtime cannot run (a Core ML or NPU export: its bundle's target says so, or the program delegates to
a backend this runtime lacks) is refused in one line before anything is timed, instead of failing inside the loader.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from compress.atomic import sha256_file
from compress.errors import UserError
from compress.readers import read_bytes, read_json
from mobile_export.bench.schema import (
    BenchRun,
    BenchSettings,
    DeviceInfo,
    MethodLatency,
    ModelResult,
    OpTime,
    tensor_specs,
)
from mobile_export.lower.targets import TARGETS
from mobile_export.pte_check import MANIFEST
from mobile_export.runtime import PteModule, set_threadpool, threadpool_size
from mobile_export.timing import profile_ops, summarize_latencies, time_runs, timed_load

TOP_OPS = 12


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


def timed_methods(module: PteModule) -> list[str]:
    """Methods that take inputs (the model); constant methods (embedded metadata) take none."""
    names = []
    for name in sorted(module.method_names):
        if module.program.metadata(name).num_inputs() > 0:
            names.append(name)
    return names


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
    module, first_load_ms = timed_load(path)
    methods = timed_methods(module)
    results, ops = [], None
    for i, name in enumerate(methods):
        if name != module.method_name:
            module, load_ms = timed_load(path, name)
        else:
            load_ms = first_load_ms
        row = module.default_inputs()
        latencies = time_runs(module, row, settings.runs, settings.warmup)
        stats = summarize_latencies(latencies, load_ms)
        results.append(MethodLatency(method=name, inputs=tensor_specs(row), latencies_ms=latencies,
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


def delegate_backends(path: Path) -> set[str]:
    """The backend ids a `.pte` delegates to (its execution plans' delegates); empty when it cannot be parsed (the
    runtime's own loader then gives its one-line error)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        program = deserialize_pte_binary(read_bytes(path, "program", "")).program
        return {d.id for plan in program.execution_plan for d in plan.delegates}
    except Exception:  # noqa: BLE001 - a damaged flatbuffer fails in many ways; check_pte vetted the header
        return set()


def check_runs_here(path: Path) -> None:
    """A one-line UserError when this host's runtime cannot run `path`: its bundle's target runs elsewhere (Core ML,
    an NPU), or it delegates to a backend this runtime was not built with."""
    from executorch.extension.pybindings import portable_lib

    from mobile_export.runtime import _runtime, runtime_stderr

    manifest = path.parent / MANIFEST
    if manifest.is_file():
        doc = read_json(manifest, "bench: bundle manifest", "re-export the bundle")
        target = TARGETS.get(str(doc.get("target"))) if isinstance(doc, dict) else None
        programs = doc.get("programs") if isinstance(doc, dict) else None
        listed = isinstance(programs, dict) and path.name in programs
        if target is not None and listed and not target.runs_on_host:
            raise UserError(f"bench: {str(path)!r} is a {target.name} program; programs not run: "
                            f"{target.not_run_here()}")
    with runtime_stderr():  # the runtime's first start in a process prints its CPU probe: kept off the terminal
        _runtime()
        registered = set(portable_lib._get_registered_backend_names())
    missing = delegate_backends(path) - registered
    if missing:
        raise UserError(f"bench: {str(path)!r} delegates to {', '.join(sorted(missing))}, which this host's ExecuTorch "
                        "runtime does not have; time it on a device whose runtime does")


def run_host(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """This machine's ExecuTorch runtime (the same kernels and XNNPACK delegate a phone uses, x86 micro-kernels)."""
    if arg:
        raise UserError(f"bench: the host device takes no argument (got 'host:{arg}')")
    for path in programs:  # every refusal before any timing
        check_runs_here(path)
    set_threadpool(settings.threads)
    threads = threadpool_size()
    models = [bench_on_host(p, settings) for p in programs]
    device = DeviceInfo(
        name="host", kind="host", model=_cpu_model(), os=f"{platform.system()} {platform.release()}",
        abi=platform.machine(), cores=os.cpu_count(), threads=threads, versions=_versions(),
    )
    return BenchRun(device, models)
