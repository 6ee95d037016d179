"""Delegation report per export: which ops the backend took and which it left to ExecuTorch's portable CPU kernels,
with counts, and how much of the measured time those left-out ops cost (from an ETDump of the real `.pte`).

Counts alone mislead: ten left-out `view`s cost nothing, one left-out LayerNorm per block can cost a tenth of the
run. So the report sets the counts beside the time share, and `export` writes it next to the programs
(delegation.json, delegation.md) for every export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from compress.atomic import write_json, write_text
from mobile_export.lower.capture import LoweredProgram
from mobile_export.lower.targets import get_target

_WRAPPERS = ("Method::execute", "OPERATOR_CALL", "DELEGATE_CALL")


def time_shares(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`mobile_export.timing.profile_ops` rows -> total, delegate and portable-op time of one execution, and the
    portable ops' time by op (`native_call_<op>` events; `OPERATOR_CALL` only wraps them)."""
    total = sum(r["median_ms"] for r in rows if r["event"] == "Method::execute")
    delegate = sum(r["median_ms"] for r in rows if r["event"] == "DELEGATE_CALL")
    by_op: dict[str, float] = {}
    for r in rows:
        if r["delegated"] or r["event"] in _WRAPPERS:
            continue
        op = r["event"].removeprefix("native_call_")
        by_op[op] = by_op.get(op, 0.0) + r["median_ms"]
    portable = sum(by_op.values())
    total = total or (delegate + portable)
    return {
        "total_ms": total,
        "delegate_ms": delegate,
        "non_delegated_ms": portable,
        "non_delegated_share": portable / total if total else 0.0,
        "non_delegated_ms_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
    }


def xnnpack_report(summary: dict[str, Any], pte: str | os.PathLike, inputs: tuple[torch.Tensor, ...] | None = None,
                   runs: int = 5) -> dict[str, Any]:
    """Counts from `lower.delegation_summary` plus the ETDump time share of the left-out ops, measured on `pte`."""
    from mobile_export.runtime import PteModule
    from mobile_export.timing import profile_ops

    inputs = inputs if inputs is not None else PteModule(pte).default_inputs()
    return {**summary, "time": {"source": "etdump", "runs": runs, **time_shares(profile_ops(pte, inputs, runs=runs))}}


def npu_report(summary: dict[str, Any], estimate: dict[str, Any]) -> dict[str, Any]:
    """An NPU program (Ethos-U): nothing runs here, so time comes from the compiler's estimate (Vela, NPU part only);
    the left-out ops run on the CPU."""
    return {**summary, "time": {"source": "vela-estimate", "npu_ms": estimate["inference_time_ms"],
                                "accelerator": estimate["accelerator"], "npu_partitions": estimate["partitions"]}}


def delegation_report(program: LoweredProgram, pte: str | os.PathLike,
                      example_inputs: tuple[torch.Tensor, ...] | None = None) -> dict[str, Any]:
    """The report of one lowered program saved at `pte`: Vela's NPU time when the target estimated one, else the
    ETDump time share measured on the host when the host runtime can run it, else the counts alone."""
    if program.estimate is not None:
        return npu_report(program.delegation, program.estimate)
    if get_target(program.target).runs_on_host:
        return xnnpack_report(program.delegation, pte, example_inputs)
    return program.delegation


def _ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{op.removeprefix('aten_')}×{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    lines = ["# Delegation", "",
             "| program | delegated subgraphs | delegated nodes | left-out nodes | left-out time | left-out ops |",
             "|---|---:|---:|---:|---:|---|"]
    for name, r in reports.items():
        t = r.get("time", {})
        share = (f"{t['non_delegated_share']:.1%} ({t['non_delegated_ms']:.3f} of {t['total_ms']:.3f} ms)"
                 if "non_delegated_share" in t else "CPU side not estimated" if t else "–")
        lines.append(f"| `{name}` | {r['delegated_subgraphs']} | {r['delegated_nodes']} | {r['non_delegated_nodes']} | "
                     f"{share} | {_ops(r['non_delegated_ops']) or 'none'} |")
    for name, r in reports.items():
        lines += ["", f"## `{name}`", "", f"Delegated: {_ops(r['delegated_ops']) or 'none'}", ""]
        by_op = r.get("time", {}).get("non_delegated_ms_by_op")
        if by_op:
            lines += ["Left-out time by op (ms, one execution): "
                      + ", ".join(f"{op} {ms:.3f}" for op, ms in by_op.items()), ""]
    return "\n".join(lines) + "\n"


def write_delegation(folder: str | os.PathLike, reports: dict[str, dict[str, Any]]) -> Path:
    """delegation.json + delegation.md in an export folder. `reports`: program file -> report, or -> {"delegation":
    summary, "estimate": Vela estimate} for an Ethos-U program."""
    folder = Path(folder)
    done = {name: (npu_report(r["delegation"], r["estimate"]) if "estimate" in r else r) for name, r in reports.items()}
    write_json(folder / "delegation.json", done)
    write_text(folder / "delegation.md", markdown(done))
    return folder / "delegation.json"
