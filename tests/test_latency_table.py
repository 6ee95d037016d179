"""bench/latency_table.py: one tiny student row lowered and timed through the real ExecuTorch runtime; the row schema,
the .pte cache and the acceptance ratios (no timing assertions: the host is shared)."""
from __future__ import annotations

import pytest

from bench.latency_table import (
    ROW_KEYS,
    RowSpec,
    acceptance_ratios,
    build_pte,
    build_row,
    markdown,
    select,
    student_specs,
)
from compress.errors import UserError

TINY = RowSpec("text_pico", "text", "fp32", 8, "student", embed_dim=16, vocab_size=64)


@pytest.fixture(scope="module")
def tiny_row(tmp_path_factory):
    cache = tmp_path_factory.mktemp("latency_cache")
    return build_row(TINY, cache, target_s=0.01, min_runs=2, max_runs=2, warmup=0), cache


def test_row_schema(tiny_row):
    row, _ = tiny_row
    assert list(row)[: len(ROW_KEYS)] == list(ROW_KEYS)
    assert (row["model"], row["tower"], row["precision"], row["input"]) == ("text_pico", "text", "fp32", "8tok")
    assert isinstance(row["median_ms"], float) and row["median_ms"] > 0
    assert row["pte_mb"] > 0 and row["runs"] == 2
    assert isinstance(row["params"], int) and row["params"] > 64 * 96  # at least the embedding table
    assert isinstance(row["macs"], int) and row["macs"] > 0
    assert row["cached"] is False


def test_pte_is_cached(tiny_row):
    _, cache = tiny_row
    pte, facts = build_pte(TINY, cache)
    assert facts["cached"] is True and pte.is_file()
    assert len(list(cache.glob("*.pte"))) == 1


def test_specs_cover_every_precision_and_the_comparison_sizes():
    specs = student_specs()
    image = {(s.model, s.precision, s.input) for s in specs if s.tower == "image"}
    assert {("mobilevit_xxs", p, s) for p in ("fp32", "int8", "8da4w") for s in ("64px", "224px")} <= image
    assert ("text_tiny", "int8", "77tok") in {(s.model, s.precision, s.input) for s in specs if s.tower == "text"}
    with pytest.raises(UserError, match="matches no row"):
        select(specs, ["nosuch/*"])


def test_ratios_and_markdown():
    def row(model, tower, precision, inp, ms, role="student"):
        return dict(model=model, tower=tower, precision=precision, input=inp, median_ms=ms, pte_mb=1.0, params=1,
                    macs=1, role=role, trained_input=True)

    rows = [
        row("altclip", "image", "fp32", "224px", 900.0, "teacher"),
        row("altclip", "text", "fp32", "77tok", 300.0, "teacher"),
        row("fastvit_mci0", "image", "fp32", "224px", 20.0, "peer"),
        row("mobilevit_xxs", "image", "fp32", "224px", 30.0),
        row("mobilevit_xxs", "image", "int8", "224px", 15.0),
        row("text_tiny", "text", "int8", "77tok", 0.5),
    ]
    ratios = acceptance_ratios(rows)
    assert ratios["int8_image_student_224_vs_altclip_image"]["value"] == 60.0
    assert ratios["int8_text_student_vs_xlmr_large"]["pass"] is True
    assert ratios["int8_vs_fp32_image_student_224"]["value"] == 2.0
    assert ratios["best_int8_image_student_vs_fastvit_mci0_fp32_224"]["pass"] is True
    meta = dict(versions={"executorch": "x"}, threads=1, host="h", loadavg_before=[1.0], loadavg_after=[1.0],
                command="c")
    table = markdown({"rows": rows, "ratios": ratios, "meta": meta})
    assert "| mobilevit_xxs | image | int8 | 224px | 15.00 |" in table
