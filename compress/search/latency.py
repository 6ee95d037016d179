"""Measured latency of a candidate tower against a reference timed beside it, a persistent table of measurements, and
a predictor that prunes only beyond its own measured error.

A candidate is lowered exactly as a run exports it (`get_target("xnnpack").lower`, mobile_export.lower.targets), fp32
and int8 (int8 through compress.quant.schemes' post-training verb with the recipe's QAT quantizer, calibrated on a
couple of random batches: good enough for timing, not for accuracy), and timed batch-1 on the host's ExecuTorch
runtime at a fixed XNNPACK thread count, or on a phone through minibench (mobile_export.bench.adb).

**Relative to a reference.** Absolute milliseconds move with the machine and its load, so every measurement times the
search's reference tower's int8 program (e.g. `mobilevit_xxs` at 64 px) in the same sitting, interleaved with the
candidate in alternating rounds: a load change hits both alike, and the ratio (candidate / reference) is what budgets
compare. fp32 and int8 candidates are both timed against the reference's int8 program: one unit, so fp32 ratio /
int8 ratio is the candidate's int8 speed-up.
A table row keeps both times, so a cached row converts to any machine's budget (`Budget`).

**Both cores.** Lowering and timing run in one separate process (`MeasureProcess`), pinned to the last core while the
search's proxy training runs pinned to the others (compress/search/runner.py): the two never share a core.

Lowering costs tens of seconds per tower, so every measurement lands in `.cache/latency/table.jsonl`, keyed by the
spec, quant, device, thread count, reference and the ExecuTorch version; the reference's own programs are kept under
`.cache/latency/programs/`. A repeated search lowers nothing.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from compress.atomic import write_text
from compress.errors import UserError
from compress.home import cache_dir
from students.spaces import ImageCandidate, TextCandidate, canonical

# 3: every quant is timed against the reference's int8 program (one unit for fp32 and int8); 2: rows carry the
# reference's time from the same sitting. Bump when a measurement's meaning changes.
LATENCY_VERSION = 3


def runtime_version() -> str:
    import executorch.version

    return f"executorch-{executorch.version.__version__}"


@functools.cache  # fixed within a process; computed once, not per row or key
def quantizer_fingerprint() -> str:
    """Hash of the int8 quantization recipe (compress.quant.pt2e): a changed quantizer is a different int8 program."""
    from compress.quant import pt2e as qat

    return hashlib.sha256(canonical(qat.describe_qat_config()).encode()).hexdigest()[:12]


def table_key(spec_key: str, quant: str, device: str, threads: int, runtime: str | None = None,
              reference: str | None = None) -> str:
    """`reference`: the reference tower's spec key (None for the reference's own rows)."""
    return canonical({"spec": json.loads(spec_key), "quant": quant, "device": device, "threads": threads,
                      "runtime": runtime or runtime_version(), "version": LATENCY_VERSION,
                      **({"reference": json.loads(reference)} if reference else {}),
                      **({"quantizer": quantizer_fingerprint()} if quant == "int8" else {})})


class LatencyTable:
    """JSONL rows {key, ms, ref_ms, ...}; the whole file is rewritten atomically on each insert (it stays small)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir("latency", "table.jsonl")
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            from compress.readers import read_text

            try:
                text = read_text(self.path, "latency table", "", encoding="utf-8")
            except UserError:  # an unreadable cache is measured again, never fatal
                text = ""
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a foreign or damaged line is skipped, never fatal: it is only a cache

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> None:
        self.rows[key] = {"key": key, **row}
        write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows.values()))


# ------------------------------------------------------------------------------------------------ towers
@dataclass(frozen=True)
class NamedCandidate:
    """A registered student (students/registry.py) as a tower to time: the usual latency reference."""

    arch: str
    tower: str = "image"
    image_size: int = 64
    context_length: int = 24

    family = "reference"

    def key(self, embed_dim: int, vocab_size: int = 4096) -> str:
        size = ({"image_size": self.image_size} if self.tower == "image"
                else {"context_length": self.context_length, "vocab_size": vocab_size})
        return canonical({"tower": self.tower, "arch": self.arch, "embed_dim": embed_dim, **size})

    def name(self) -> str:
        return f"{self.arch}_r{self.image_size}" if self.tower == "image" else f"{self.arch}_c{self.context_length}"


Tower = ImageCandidate | TextCandidate | NamedCandidate


def spec_key(cand: Tower, embed_dim: int, vocab_size: int) -> str:
    return cand.key(embed_dim) if isinstance(cand, ImageCandidate) else cand.key(embed_dim, vocab_size)


def build_tower(cand: Tower, embed_dim: int, vocab_size: int) -> torch.nn.Module:
    from students.registry import create_image_tower, create_text_tower

    if isinstance(cand, NamedCandidate):
        if cand.tower == "image":
            return create_image_tower(cand.arch, embed_dim, cand.image_size)
        return create_text_tower(cand.arch, vocab_size, embed_dim, cand.context_length)
    if isinstance(cand, ImageCandidate):
        return create_image_tower(cand.family, embed_dim, cand.image_size, cand.spec())
    return create_text_tower("text", vocab_size, embed_dim, cand.context_length, cand.spec())


def example_input(cand: Tower, batch: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor]:
    """Pixels, or ids that are half padding (the mask path is traced), as compress.model.example_inputs makes them."""
    gen = torch.Generator().manual_seed(seed)
    if cand.tower == "image":
        return (torch.rand(batch, 3, cand.image_size, cand.image_size, generator=gen),)
    ids = torch.randint(2, vocab_size, (batch, cand.context_length), generator=gen)
    ids[:, cand.context_length // 2:] = 0
    return (ids,)


# Ops that only move or name data: not counted as float compute in an int8 graph.
_LAYOUT_OPS = {"view", "reshape", "permute", "transpose", "clone", "expand", "slice", "select", "unsqueeze", "squeeze",
               "flatten", "contiguous", "_to_copy", "t", "cat", "split", "chunk", "getitem", "alias", "detach",
               "unbind", "split_with_sizes", "unflatten", "dropout", "sym_size", "expand_as"}


def float_ops(graph_module: Any) -> dict[str, int]:
    """Compute ops the int8 quantizer left unannotated in a converted graph: what runs in float inside the int8
    program (in XNNPACK's fp32 kernels, or outside the delegate). Why a family gains little from int8."""
    graph = getattr(graph_module, "graph", None)
    counts: dict[str, int] = {}
    for n in graph.nodes if graph is not None else ():
        if n.op != "call_function" or "quantization_annotation" in n.meta:
            continue
        name = str(n.target)
        base = name.removeprefix("aten.").split(".")[0]
        if "quantize" in base or base in _LAYOUT_OPS or base.startswith("<built-in"):  # <built-in ...>: getitem / sym ints
            continue
        counts[base] = counts.get(base, 0) + 1
    return dict(sorted(counts.items()))


def lower_candidate(tower: torch.nn.Module, cand: Tower, quant: str, vocab_size: int, target: str = "xnnpack"):
    """(program, float ops): fp32 is the eager tower; int8 the headline `int8` scheme through the project's one
    post-training verb (compress.quant.schemes.quantize_tower), calibrated on two random batches."""
    from mobile_export.lower.targets import get_target

    ex = example_input(cand, 2, vocab_size)
    module = tower.eval()
    floats: dict[str, int] = {}
    if quant == "int8":
        from compress.quant.schemes import get_scheme, quantize_tower

        calibration = [example_input(cand, 8, vocab_size, seed=i + 1) for i in range(2)]
        module = quantize_tower(get_scheme("int8"), tower, ex, calibration)
        floats = float_ops(module)
    return get_target(target).lower(module, ex), floats


# ------------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class Latency:
    """One candidate at one quant: its median and the reference's, timed in the same sitting."""

    ms: float
    ref_ms: float

    @property
    def ratio(self) -> float:
        return self.ms / self.ref_ms


@dataclass(frozen=True)
class Budget:
    """A tower's budget in reference units (candidate ms / reference ms, same sitting). A relative budget is its
    factor; an absolute one is its ms over the reference's time in this search's sitting, so a cached row converts."""

    factor: float
    ms: float | None = None  # the absolute budget as written (None: relative)
    reference: str = ""  # the reference's name, for reports
    reference_ms: float | None = None  # the reference's int8 ms in this sitting (what an absolute budget divides by)

    @classmethod
    def relative(cls, factor: float, reference: str) -> "Budget":
        return cls(float(factor), None, reference)

    @classmethod
    def absolute(cls, ms: float, reference: str, reference_ms: float) -> "Budget":
        return cls(float(ms) / float(reference_ms), float(ms), reference, float(reference_ms))

    def fits(self, latency: Latency) -> bool:
        return latency.ratio <= self.factor

    def describe(self) -> str:
        rel = f"{self.factor:.3g}× {self.reference} int8"
        return rel if self.ms is None else f"{self.ms:g} ms int8 (= {rel}, the reference at {self.reference_ms:.3f} ms here)"


@dataclass(frozen=True)
class Job:
    """What the measuring process needs for one candidate: picklable, nothing else is shared."""

    cand: Tower
    reference: Tower
    quants: tuple[str, ...]
    embed_dim: int
    vocab_size: int
    device: str = "host"
    threads: int = 1
    runs: int = 50
    rounds: int = 5


_PROGRAMS: dict[str, bytes] = {}  # the reference's lowered programs, per process


def _reference_program(job: Job, quant: str) -> bytes:
    """The reference's .pte bytes: this process's copy, else `.cache/latency/programs/`, else lowered now."""
    from compress.atomic import write_bytes

    key = table_key(spec_key(job.reference, job.embed_dim, job.vocab_size), quant, "program", 0)
    if key not in _PROGRAMS:
        path = cache_dir("latency", "programs", hashlib.sha256(key.encode()).hexdigest()[:20] + ".pte")
        cached = None
        if path.is_file():
            from compress.readers import read_bytes

            try:
                cached = read_bytes(path, "cached reference program", "")
            except UserError:  # an unreadable cache is lowered again, never fatal
                cached = None
        if cached:
            _PROGRAMS[key] = cached
        else:
            tower = build_tower(job.reference, job.embed_dim, job.vocab_size)
            program, _ = lower_candidate(tower, job.reference, quant, job.vocab_size)
            _PROGRAMS[key] = program.buffer
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, program.buffer)
    return _PROGRAMS[key]


def time_interleaved(cand_path: Path, ref_path: Path, cand_in: tuple, ref_in: tuple, runs: int, rounds: int,
                     threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Candidate and reference loaded side by side and timed in `rounds` alternating blocks (reference first):
    whatever the machine does meanwhile lands on both."""
    from mobile_export.runtime import set_threadpool
    from mobile_export.timing import summarize_latencies, time_runs, timed_load

    before = set_threadpool(threads)  # `threads` of the table key; put back for what runs next
    try:
        cand, cand_load = timed_load(cand_path)
        ref, ref_load = timed_load(ref_path)
        rows = tuple(t[:1].contiguous() for t in cand_in), tuple(t[:1].contiguous() for t in ref_in)
        time_runs(cand, rows[0], 0, 3)
        time_runs(ref, rows[1], 0, 3)
        per = max(1, math.ceil(runs / rounds))
        c: list[float] = []
        r: list[float] = []
        for _ in range(rounds):
            r += time_runs(ref, rows[1], per, 0)
            c += time_runs(cand, rows[0], per, 0)
    finally:
        set_threadpool(before)
    return summarize_latencies(c, cand_load), summarize_latencies(r, ref_load)


def measure_job(job: Job) -> dict[str, dict[str, Any]]:
    """Lower `job.cand` at each quant and time it against the reference: {quant: table row}. Runs in the measuring
    process (or inline when there is one core)."""
    from mobile_export.bench.run import parse_device
    from mobile_export.lower.capture import LoweredProgram

    name, serial = parse_device(job.device)
    if name not in ("host", "adb"):
        raise UserError(f"search: latency is measured on host or adb[:SERIAL], not on {job.device!r}")
    out: dict[str, dict[str, Any]] = {}
    tower = None
    for quant in job.quants:
        start = time.perf_counter()
        if job.cand == job.reference and quant == "int8":  # the reference itself: its stored program, not lowered again
            program, floats = LoweredProgram(_reference_program(job, quant), {}), {}
        else:
            tower = tower if tower is not None else build_tower(job.cand, job.embed_dim, job.vocab_size)
            program, floats = lower_candidate(tower, job.cand, quant, job.vocab_size)
        lower_s = time.perf_counter() - start
        # The reference's int8 program for every quant: fp32 and int8 ratios share one unit, so their quotient is
        # the candidate's own int8 speed-up.
        ref_bytes = _reference_program(job, "int8")
        with tempfile.TemporaryDirectory() as tmp:
            cand_path, ref_path = Path(tmp) / f"cand_{quant}.pte", Path(tmp) / f"ref_{quant}.pte"
            cand_path.write_bytes(program.buffer)
            ref_path.write_bytes(ref_bytes)
            cand_in = example_input(job.cand, 1, job.vocab_size)
            ref_in = example_input(job.reference, 1, job.vocab_size)
            if name == "host":
                bench, ref_bench = time_interleaved(cand_path, ref_path, cand_in, ref_in, job.runs, job.rounds, job.threads)
                ms, ref_ms = bench["median_inference_latency(ms)"], ref_bench["median_inference_latency(ms)"]
            else:
                ms, ref_ms, bench = _time_on_phone(serial, cand_path, ref_path, job.runs)
        out[quant] = {"ms": float(ms), "ref_ms": float(ref_ms), "ratio": round(float(ms) / float(ref_ms), 5),
                      "name": job.cand.name(), "reference": job.reference.name(), "reference_quant": "int8",
                      "quant": quant, "device": job.device,
                      "threads": job.threads, "pte_bytes": program.size_bytes, "lower_s": round(lower_s, 2),
                      "non_delegated_ops": program.delegation.get("non_delegated_ops", {}), "float_ops": floats,
                      "bench": bench, "pid": os.getpid()}
    return out


_PHONES: dict[str | None, Any] = {}


def _time_on_phone(serial: str | None, cand: Path, ref: Path, runs: int) -> tuple[float, float, dict[str, Any]]:
    """Reference, candidate, reference on the phone (minibench reports no median: its mean stands in); the
    reference's time is the mean of the two around the candidate."""
    from mobile_export.bench.adb import AdbDevice, time_on_phone

    if serial not in _PHONES:
        _PHONES[serial] = AdbDevice(serial)
    device, root = _PHONES[serial], "/data/local/tmp/dcclip-search"

    def ms(path: Path) -> tuple[float, dict]:
        m = time_on_phone(device, path, runs, root=root)
        return float(m.get("avg_inference_latency(ms)", m.get("median_inference_latency(ms)"))), m

    before, _ = ms(ref)
    cand_ms, metrics = ms(cand)
    after, _ = ms(ref)
    return cand_ms, (before + after) / 2, metrics


def _pin_measuring_process(cpu: int | None) -> None:
    """Initializer of the measuring process: one core, one intra-op thread (XNNPACK's pool is set per timing)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)


class MeasureProcess:
    """One spawned process that lowers and times, pinned to `cpu`; `submit` returns a concurrent Future."""

    def __init__(self, cpu: int | None) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.cpu = cpu
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_pin_measuring_process, initargs=(cpu,))

    def submit(self, job: Job):
        return self.pool.submit(measure_job, job)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Done:
    """A Future-like result that is already there (a table hit, or a job measured inline)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


@dataclass
class Measurer:
    """Lower + time candidates against `reference` on `device` ("host", or "adb[:SERIAL]"), with the table in front.

    `process`: a MeasureProcess to run misses in (both cores); None measures inline, in this process."""

    table: LatencyTable
    reference: Tower
    device: str = "host"
    threads: int = 1
    runs: int = 50
    embed_dim: int = 128
    vocab_size: int = 4096
    process: MeasureProcess | None = None
    rounds: int = 5
    measured: int = 0  # candidates lowered by this measurer (table misses)
    hits: int = 0

    def key(self, cand: Tower, quant: str) -> str:
        return table_key(spec_key(cand, self.embed_dim, self.vocab_size), quant, self.device, self.threads,
                         reference=spec_key(self.reference, self.embed_dim, self.vocab_size))

    def lookup(self, cand: Tower, quant: str) -> Latency | None:
        row = self.table.get(self.key(cand, quant))
        try:
            return None if row is None else Latency(float(row["ms"]), float(row["ref_ms"]))
        except (KeyError, TypeError, ValueError):
            return None  # a row of another layout: measured again

    def row(self, cand: Tower, quant: str) -> dict[str, Any] | None:
        return self.table.get(self.key(cand, quant))

    def submit(self, cand: Tower, quants: tuple[str, ...]):
        """A Future of {quant: Latency}; table hits come back at once, misses run in the measuring process (or
        inline when there is none). Collect with `collect`."""
        if all(self.lookup(cand, q) is not None for q in quants):
            self.hits += 1
            return _Done(None)
        return self._run(cand, tuple(quants))

    def collect(self, cand: Tower, quants: tuple[str, ...], future) -> dict[str, Latency]:
        rows = future.result()
        if rows is not None:
            for quant, row in rows.items():
                self.table.put(self.key(cand, quant), row)
            self.measured += 1
        return {q: self.lookup(cand, q) for q in quants}

    def measure(self, cand: Tower, quants: tuple[str, ...] = ("int8",)) -> dict[str, Latency]:
        return self.collect(cand, quants, self.submit(cand, quants))

    def reference_ms(self, quant: str = "int8") -> float:
        """The reference's median in this sitting (timed against itself): what an absolute budget divides by."""
        return self.measure_now(self.reference, quant).ref_ms

    def measure_now(self, cand: Tower, quant: str) -> Latency:
        """Timed now, whatever the table holds (not stored)."""
        rows = self._run(cand, (quant,)).result()
        return Latency(rows[quant]["ms"], rows[quant]["ref_ms"])

    def _run(self, cand: Tower, quants: tuple[str, ...]):
        """A Future of measure_job's rows: in the measuring process, or inline when there is none."""
        job = Job(cand, self.reference, quants, self.embed_dim, self.vocab_size, self.device, self.threads, self.runs,
                  self.rounds)
        return self.process.submit(job) if self.process is not None else _Done(measure_job(job))

# ------------------------------------------------------------------------------------------------ predictor
@dataclass
class Predictor:
    """Per-family least squares in log space: log(ratio) ~ a + b log(MMACs) (+ c log(Mparams) with 4+ points); all
    families pooled until a family has 2 points. Latency grows multiplicatively with size, and sub-millisecond
    timings are noisy: a log fit keeps one large candidate from dragging the small ones' predictions.

    It prunes only with a family's own fit, and only beyond that kind of fit's error band: the largest relative error
    |predicted - measured| / measured of the family-fit predictions it made before each candidate was measured
    (`observe`), never below `margin`, and not at all until it has `min_errors` of them. (A pooled fit, across
    families, only orders the work: on the first search it was off by up to 56x.) If the band bounds the error, a
    candidate that fits is never pruned: predicted <= measured * (1 + band) <= limit * (1 + band)."""

    points: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # family -> (macs, params, value)
    errors: list[tuple[float, float]] = field(default_factory=list)  # (predicted, measured), predicted first
    family_errors: list[tuple[float, float]] = field(default_factory=list)  # those from a family's own fit
    margin: float = 0.0
    min_errors: int = 3

    def add(self, family: str, macs: int, params: int, value: float) -> None:
        self.points.setdefault(family, []).append((max(macs, 1) / 1e6, max(params, 1) / 1e6, max(value, 1e-9)))

    @staticmethod
    def _fit(pts: list[tuple[float, float, float]]) -> Callable[[float, float], float] | None:
        if len(pts) < 2:
            return None
        a = np.log(np.array(pts, dtype=float))
        cols = [np.ones(len(a)), a[:, 0]] + ([a[:, 1]] if len(a) >= 4 else [])
        coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), a[:, 2], rcond=None)
        return lambda macs, params: float(np.exp(coef[0] + coef[1] * math.log(macs)
                                                 + (coef[2] * math.log(params) if len(coef) > 2 else 0.0)))

    def own_fit(self, family: str) -> bool:
        return len(self.points.get(family, [])) >= 2

    def predict(self, family: str, macs: int, params: int) -> float | None:
        fit = self._fit(self.points.get(family, []))
        if fit is None:
            fit = self._fit([p for pts in self.points.values() for p in pts])
        return None if fit is None else fit(max(macs, 1) / 1e6, max(params, 1) / 1e6)

    def observe(self, predicted: float, measured: float, own_fit: bool = True) -> None:
        self.errors.append((predicted, measured))
        if own_fit:
            self.family_errors.append((predicted, measured))

    def band(self) -> float | None:
        """The error band pruning allows for; None until there are `min_errors` checked family-fit predictions."""
        if len(self.family_errors) < self.min_errors:
            return None
        return max(self.margin, max(abs(p - m) / max(m, 1e-9) for p, m in self.family_errors))

    def prunes(self, predicted: float | None, limit: float, own_fit: bool = True) -> bool:
        band = self.band()
        return own_fit and predicted is not None and band is not None and predicted > limit * (1 + band)


def prediction_error(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """(predicted, measured) pairs, each predicted before it was measured -> relative error summary."""
    if not pairs:
        return {"n": 0}
    rel = np.array([abs(p - m) / max(m, 1e-9) for p, m in pairs])
    return {"n": len(pairs), "mean_abs_rel": round(float(rel.mean()), 4), "median_abs_rel": round(float(np.median(rel)), 4),
            "max_abs_rel": round(float(rel.max()), 4)}
