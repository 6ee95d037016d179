"""The bench report's schema (pydantic): one `ModelResult` per program, with the metric names of ExecuTorch's Android
benchmark app (minibench: `model_load_time(ms)`, `avg_inference_latency(ms)`, `trimmean_inference_latency(ms)`,
`ram_pss_usage(mb)`, `load_status`), so host, phone and compiler-estimate numbers land in the same report columns.

Its JSON Schema is `BenchReport.model_json_schema(by_alias=True)`. Every device runner (host, adb, vela) returns a
`BenchRun` of these models.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "dcclip-compress/bench/1"


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


@dataclass
class BenchRun:
    """What a device runner returns: the device and one result per program."""

    device: DeviceInfo
    models: list[ModelResult]


def tensor_specs(tensors: tuple[torch.Tensor, ...]) -> list[TensorSpec]:
    """The shapes and dtypes of a method's inputs, as the report lists them."""
    return [TensorSpec(shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch.")) for t in tensors]
