"""bench/ablation.py's bookkeeping: per-item correctness -> top-1, the paired comparisons and the table (no training
here: the bench's runs are normal pipeline runs, tested elsewhere)."""
import json

import numpy as np
import pytest

from bench.ablation import COMPARISONS, compare, markdown, rows, summarise, top1, val_score
from compress.recipe import load_recipe


def _run(student: dict, teacher: str = "1111", classes=(1, 1, 2, 2)) -> dict:
    split = lambda bits: {"classes": list(classes), "student": {"en": bits, "zh": bits}, "teacher": {"en": teacher, "zh": teacher}}  # noqa: E731
    return {s: split(b) for s, b in student.items()}


def test_top1_and_summary_over_seeds():
    runs = {(0, 0): _run({"known": "1100", "val": "1000", "val_known": "0000"}),
            (0, 1): _run({"known": "1110", "val": "1100", "val_known": "1000"})}
    assert top1(runs[(0, 0)], "student")["known"] == {"en": 50.0, "zh": 50.0}
    s = summarise(runs)
    assert s["mean"]["known"]["en"] == pytest.approx(62.5)
    assert s["sd"]["known"]["en"] == pytest.approx(np.std([50.0, 75.0], ddof=1))
    assert summarise(runs, "teacher")["mean"]["known"]["zh"] == 100.0
    assert val_score(runs[(0, 0)]) == pytest.approx(12.5)  # mean of val 25 and val_known 0


def test_paired_comparison_by_hand():
    a = {(0, 0): _run({"known": "1000"}), (0, 1): _run({"known": "1000"})}
    b = {(0, 0): _run({"known": "1110"}), (0, 1): _run({"known": "1100"}), (1, 0): _run({"known": "1111"})}
    c = compare(a, b)
    assert c["runs"] == [[0, 0], [0, 1]]  # only the runs both rows have
    en = c["known"]["en"]
    assert en["per_run"] == [50.0, 25.0] and en["diff"] == pytest.approx(37.5)
    lo, hi = en["ci95_class_bootstrap"]
    assert lo <= 37.5 <= hi
    # McNemar within each run: 2 and 1 discordant items, all one way: p = 2 * 0.5**2 = 0.5 and 2 * 0.5 = 1 (capped)
    assert en["mcnemar_p"] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert en["ci95_seed_t"][0] < 37.5 < en["ci95_seed_t"][1]
    assert compare(a, {}) == {"runs": []}


def test_rows_have_the_issue_s_ids_and_the_table_marks_single_runs():
    base = load_recipe("recipes/mobilevit_int8.yaml")
    table = rows(base, 5e-4)
    for rid in ("stage2_s", "stage2_sk", "dcclip_s", "dcclip_k_images", "dcclip_k_text", "dcclip_both", "maps_only",
                "embed_only", "shared_adapter", "affinity_only", "margin", "stage2_s_16renders"):
        assert rid in table
    assert "align.lr=0.0005" in table["stage2_s"].overrides and "distill.enabled=false" in table["stage2_s"].overrides
    assert all(a in table and b in table for a, b in COMPARISONS)
    for row in table.values():  # every row's overrides load
        load_recipe("recipes/mobilevit_int8.yaml", list(row.overrides))
    result = {"rows": {"teacher": {"label": "t", **summarise({(0, 0): _run({"known": "1111", "eval": "1111", "unseen": "0001"})}, "teacher")},
                       "dcclip_both": {"label": "d", "runs": []}},
              "comparisons": {}}
    md = markdown(result)
    assert md.count("100.0 (1 run)") == 6 and "| `dcclip_both` d | not run |" in md


def test_the_per_item_scores_must_match_the_report():
    from bench.ablation import check_against_report

    correct = _run({"known": "1100"})
    report = {"models": {"student_fp32": {"zero_shot": {"known": {"en": {"top1": 0.5}, "zh": {"top1": 0.5}}}}}}
    check_against_report(correct, report)
    report["models"]["student_fp32"]["zero_shot"]["known"]["zh"]["top1"] = 0.75
    with pytest.raises(RuntimeError, match="known/zh"):
        check_against_report(correct, report)


def test_run_keys_ignore_new_default_keys_and_stage_2(tmp_path):
    """A run's folder is keyed by the recipe's fingerprint payload: a recipe key added later at its default does not
    rename it, stage-2 settings do, and the stage-1 key ignores them (but not init_temperature)."""
    from bench.ablation import _key, migrate_run_keys, recipe_for

    a = recipe_for("recipes/mobilevit_int8.yaml", [], 0, 0)
    b = recipe_for("recipes/mobilevit_int8.yaml", ["align.lr=1e-3"], 0, 0)
    c = recipe_for("recipes/mobilevit_int8.yaml", ["align.init_temperature=0.05"], 0, 0)
    stage1 = lambda r: _key(r, {"align", "qat", "export"})  # noqa: E731
    assert _key(a, set()) != _key(b, set()) and stage1(a) == stage1(b) != stage1(c)
    assert _key(a, set()) == _key(recipe_for("recipes/mobilevit_int8.yaml", ["qat.ptq_observer=histogram"], 0, 0), set())
    old = tmp_path / "runs" / "oldname"
    old.mkdir(parents=True)
    (old / "recipe.json").write_text(json.dumps(a.model_dump()))
    assert migrate_run_keys(tmp_path / "runs") == 1
    assert (tmp_path / "runs" / _key(a, set()) / "stage1.key").read_text().strip() == stage1(a)


def test_curves_and_margin_sweep_tables():
    top = {s: {"en": 10.0, "zh": 20.0} for s in ("known", "eval", "unseen")}
    result = {"rows": {}, "comparisons": {},
              "curves": {"stage2_s": {"4x": {"top1": top, "val_score": 3.0, "steps": 960},
                                      "1x": {"top1": top, "val_score": 1.0, "steps": 240}}},
              "margin_sweep": {"form": "linear", "chosen": "w=0.1 T=0.07",
                               "cells": {"w=0.1 T=0.07": {"val_score": 5.0, "top1": top}}}}
    md = markdown(result)
    assert md.index("| `stage2_s` | 1x | 240 |") < md.index("| `stage2_s` | 4x | 960 |")
    assert "best val score: **w=0.1 T=0.07**" in md and "| w=0.1 T=0.07 | 5.0 | 10.0 | 20.0 |" in md
