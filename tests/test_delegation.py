"""Delegation report on a real XNNPACK `.pte`: counts from the lowered graph, time share of the left-out ops from a
real ETDump, written as delegation.json / delegation.md."""
from __future__ import annotations

import json

import torch

from mobile_export.bundle.delegation import delegation_report, time_shares, write_delegation, xnnpack_report
from mobile_export.lower.capture import save_pte
from mobile_export.lower.targets import lower_to_pte
from students.text import TextTower


def test_report_counts_and_etdump_time_share(tmp_path):
    torch.manual_seed(0)
    tower = TextTower(64, 16, 8, width=16, layers=1, heads=1).eval()
    ids = torch.randint(1, 64, (1, 8))
    program = lower_to_pte(tower, (ids,))
    save_pte(program, tmp_path / "text_fp32.pte")
    report = xnnpack_report(program.delegation, tmp_path / "text_fp32.pte", (ids,), runs=3)
    # XNNPACK 1.5.1 has no LayerNorm config: 2 per block + the final one stay on portable kernels
    assert report["non_delegated_ops"]["aten_native_layer_norm_default"] == 3
    assert report["delegated_ops"]["aten_linear_default"] == 5  # qkv, out, fc1, fc2, proj
    t = report["time"]
    assert t["source"] == "etdump" and 0 < t["non_delegated_share"] < 1
    assert t["non_delegated_ms"] <= t["total_ms"] and t["delegate_ms"] > 0
    assert "native_layer_norm.out" in t["non_delegated_ms_by_op"]
    picked = delegation_report(program, tmp_path / "text_fp32.pte", (ids,))  # XNNPACK runs here: the ETDump report
    assert picked["time"]["source"] == "etdump" and picked["delegated_ops"] == report["delegated_ops"]
    path = write_delegation(tmp_path, {"text_fp32.pte": report})
    assert json.loads(path.read_text())["text_fp32.pte"]["non_delegated_nodes"] == report["non_delegated_nodes"]
    md = (tmp_path / "delegation.md").read_text()
    assert "text_fp32.pte" in md and "native_layer_norm" in md and "%" in md


def test_time_shares_sums_portable_ops_not_their_wrappers():
    rows = [
        {"event": "Method::execute", "delegated": False, "median_ms": 10.0, "calls": 1},
        {"event": "DELEGATE_CALL", "delegated": False, "median_ms": 7.0, "calls": 1},
        {"event": "Fully Connected (NC, F32) GEMM #1", "delegated": True, "median_ms": 6.0, "calls": 1},
        {"event": "OPERATOR_CALL", "delegated": False, "median_ms": 2.2, "calls": 1},
        {"event": "native_call_native_layer_norm.out", "delegated": False, "median_ms": 1.5, "calls": 1},
        {"event": "native_call_native_layer_norm.out", "delegated": False, "median_ms": 0.5, "calls": 1},
    ]
    t = time_shares(rows)
    assert t["total_ms"] == 10.0 and t["delegate_ms"] == 7.0 and t["non_delegated_ms"] == 2.0
    assert t["non_delegated_share"] == 0.2 and t["non_delegated_ms_by_op"] == {"native_layer_norm.out": 2.0}
