"""Measured latency of a candidate tower, a persistent table of measurements, and a cheap predictor that prunes.

A candidate is lowered exactly as a run exports it (`get_target("xnnpack").lower`, mobile_export.lower.targets), fp32
and int8 (int8 through compress.quant.pt2e's prepare/convert, the quantizer the recipe's QAT uses, calibrated on a
couple of random batches: good enough for timing, not for accuracy), and timed batch-1 by the bench's own code:
mobile_export.timing.host_latency on the host at a fixed XNNPACK thread count, or minibench on a phone through
mobile_export.bench.adb.time_on_phone (the device spec is read by the bench's `parse_device`).

Lowering costs tens of seconds per tower, so every measurement lands in `.cache/latency/table.jsonl`, keyed by the
spec, quant, device, thread count and the ExecuTorch version: a repeated search measures nothing twice. Before a
candidate is measured, a per-family least-squares fit of latency on MACs and params (over what was measured so far)
predicts it, and candidates predicted well over budget are never lowered.
"""
from __future__ import annotations

import functools

import json
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

LATENCY_VERSION = 1  # bump when the lowering or timing procedure changes what a measurement means


def runtime_version() -> str:
    import executorch.version

    return f"executorch-{executorch.version.__version__}"


@functools.cache  # fixed within a process; computed once, not per row or key
def quantizer_fingerprint() -> str:
    """Hash of the int8 quantization recipe (compress.quant.pt2e): a changed quantizer is a different int8 program."""
    import hashlib

    from compress.quant import pt2e as qat

    return hashlib.sha256(canonical(qat.describe_qat_config()).encode()).hexdigest()[:12]


def table_key(spec_key: str, quant: str, device: str, threads: int, runtime: str | None = None) -> str:
    return canonical({"spec": json.loads(spec_key), "quant": quant, "device": device, "threads": threads,
                      "runtime": runtime or runtime_version(), "version": LATENCY_VERSION,
                      **({"quantizer": quantizer_fingerprint()} if quant == "int8" else {})})


class LatencyTable:
    """JSONL rows {key, ms, ...}; the whole file is rewritten atomically on each insert (it stays small)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir("latency", "table.jsonl")
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            from compress.errors import UserError
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
def build_tower(cand: ImageCandidate | TextCandidate, embed_dim: int, vocab_size: int) -> torch.nn.Module:
    from students.registry import create_image_tower, create_text_tower

    if isinstance(cand, ImageCandidate):
        return create_image_tower(cand.family, embed_dim, cand.image_size, cand.spec())
    return create_text_tower("text", vocab_size, embed_dim, cand.context_length, cand.spec())


def example_input(cand: ImageCandidate | TextCandidate, batch: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor]:
    """Pixels, or ids that are half padding (the mask path is traced), as compress.model.example_inputs makes them."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(cand, ImageCandidate):
        return (torch.rand(batch, 3, cand.image_size, cand.image_size, generator=gen),)
    ids = torch.randint(2, vocab_size, (batch, cand.context_length), generator=gen)
    ids[:, cand.context_length // 2:] = 0
    return (ids,)


def lower_candidate(tower: torch.nn.Module, cand, quant: str, vocab_size: int, target: str = "xnnpack"):
    """fp32: the eager tower; int8: the headline `int8` scheme through the project's one post-training verb
    (compress.quant.schemes.quantize_tower), calibrated on two random batches."""
    from mobile_export.lower.targets import get_target

    ex = example_input(cand, 2, vocab_size)
    module = tower.eval()
    if quant == "int8":
        from compress.quant.schemes import get_scheme, quantize_tower

        calibration = [example_input(cand, 8, vocab_size, seed=i + 1) for i in range(2)]
        module = quantize_tower(get_scheme("int8"), tower, ex, calibration)
    return get_target(target).lower(module, ex)


@dataclass
class Measurer:
    """Lower + time candidates on `device` ("host", or "adb[:SERIAL]") with a table in front of it."""

    table: LatencyTable
    device: str = "host"
    threads: int = 1
    runs: int = 10
    embed_dim: int = 128
    vocab_size: int = 4096
    measured: int = 0  # lowerings done by this measurer (table misses)
    hits: int = 0
    _device_obj: Any = None

    def key(self, cand, quant: str) -> str:
        spec_key = cand.key(self.embed_dim) if isinstance(cand, ImageCandidate) else cand.key(self.embed_dim, self.vocab_size)
        return table_key(spec_key, quant, self.device, self.threads)

    def lookup(self, cand, quant: str) -> float | None:
        row = self.table.get(self.key(cand, quant))
        return None if row is None else float(row["ms"])

    def measure(self, cand, quant: str, tower: torch.nn.Module | None = None) -> float:
        """Median batch-1 latency in ms; a table hit returns at once without lowering anything."""
        key = self.key(cand, quant)
        row = self.table.get(key)
        if row is not None:
            self.hits += 1
            return float(row["ms"])
        tower = tower if tower is not None else build_tower(cand, self.embed_dim, self.vocab_size)
        start = time.perf_counter()
        program = lower_candidate(tower, cand, quant, self.vocab_size)
        lower_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{cand.tower}_{quant}.pte"
            path.write_bytes(program.buffer)
            bench = self._time(path, example_input(cand, 1, self.vocab_size))
        ms = float(bench["median_inference_latency(ms)"])
        self.table.put(key, {"ms": ms, "name": cand.name(), "quant": quant, "device": self.device,
                             "threads": self.threads, "pte_bytes": program.size_bytes, "lower_s": round(lower_s, 2),
                             "non_delegated_ops": program.delegation.get("non_delegated_ops", {}), "bench": bench})
        self.measured += 1
        return ms

    def _time(self, path: Path, inputs: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        from mobile_export.bench.run import parse_device

        name, serial = parse_device(self.device)
        if name == "host":
            from mobile_export.runtime import set_threadpool
            from mobile_export.timing import host_latency

            before = set_threadpool(self.threads)  # `threads` of the table key; put back for what runs next
            try:
                return host_latency(path, inputs, runs=self.runs)
            finally:
                set_threadpool(before)
        if name != "adb":
            raise UserError(f"search: latency is measured on host or adb[:SERIAL], not on {self.device!r}")
        from mobile_export.bench.adb import AdbDevice, time_on_phone

        if self._device_obj is None:
            self._device_obj = AdbDevice(serial)
        metrics = time_on_phone(self._device_obj, path, self.runs, root="/data/local/tmp/dcclip-search")
        ms = metrics.get("avg_inference_latency(ms)", metrics.get("median_inference_latency(ms)"))
        return {**metrics, "median_inference_latency(ms)": ms}  # minibench reports no median: its mean stands in


# ------------------------------------------------------------------------------------------------ predictor
@dataclass
class Predictor:
    """Per-family least squares: ms ~ a + b * MMACs (+ c * Mparams with 4+ points); all families pooled (with a
    per-family offset dropped) until a family has 2 points. Cheap enough to refit after every measurement."""

    points: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # family -> (macs, params, ms)

    def add(self, family: str, macs: int, params: int, ms: float) -> None:
        self.points.setdefault(family, []).append((macs / 1e6, params / 1e6, ms))

    @staticmethod
    def _fit(pts: list[tuple[float, float, float]]) -> Callable[[float, float], float] | None:
        if len(pts) < 2:
            return None
        a = np.array(pts, dtype=float)
        cols = [np.ones(len(a)), a[:, 0]] + ([a[:, 1]] if len(a) >= 4 else [])
        x = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(x, a[:, 2], rcond=None)
        if len(coef) == 2:
            return lambda macs, params: float(coef[0] + coef[1] * macs)
        return lambda macs, params: float(coef[0] + coef[1] * macs + coef[2] * params)

    def predict(self, family: str, macs: int, params: int) -> float | None:
        fit = self._fit(self.points.get(family, []))
        if fit is None:
            fit = self._fit([p for pts in self.points.values() for p in pts])
        return None if fit is None else max(0.0, fit(macs / 1e6, params / 1e6))


def prediction_error(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """(predicted, measured) pairs, each predicted before it was measured -> relative error summary."""
    if not pairs:
        return {"n": 0}
    rel = np.array([abs(p - m) / max(m, 1e-9) for p, m in pairs])
    return {"n": len(pairs), "mean_abs_rel": round(float(rel.mean()), 4), "median_abs_rel": round(float(np.median(rel)), 4),
            "max_abs_rel": round(float(rel.max()), 4)}
