"""bench/search_winner.py's bookkeeping: the winner read from a search summary, the two rows' overrides (the reference
is the ablation's dcclip_both, so its finished runs are reused), the verdicts and the table (no training here)."""
import copy
import json

import pytest

from bench.ablation import _key, compare, recipe_for, rows, summarise
from bench.search_winner import (main, parse_seeds, parse_spec_json, reference_overrides, spec_name, table, verdicts,
                                 winner_from_summary, winner_overrides)
from compress.errors import UserError
from compress.eval.stats import t_quantile
from compress.recipe import load_recipe

RECIPE = "recipes/mobilevit_int8.yaml"
SPEC = {"family": "mobilevit", "stem": 24, "channels": [24, 32, 72, 96, 120], "ir_depth": 1,
        "transformer_dims": [96, 128, 144], "transformer_depths": [2, 4, 3], "expansion": 4.0, "num_features": 256}
NAME = "mobilevit_c120_t144_d9_e4_r64"
SUMMARY = {"seconds": 12.0, "towers": {"image": {"budget_ms": 5.0, "winner": {
    "name": NAME, "tower": "image", "family": "mobilevit", "image_size": 64,
    "arch": {k: v for k, v in SPEC.items() if k != "family"}, "spec": SPEC, "status": "winner"}}}}


def test_the_winner_is_read_from_a_search_summary():
    spec, size, name = winner_from_summary(SUMMARY)
    assert spec == SPEC and size == 64 and name == NAME
    assert spec_name(SPEC, 64) == NAME  # the search's own name when the summary has none (--spec-json)
    assert spec_name({"family": "mobilevit"}, 48) == "custom_r48"


@pytest.mark.parametrize("damage, words", [
    (lambda d: d.pop("towers"), "no image tower"),
    (lambda d: d["towers"].pop("image"), "no image tower"),
    (lambda d: d["towers"]["image"].update(winner=None), "has no winner"),
    (lambda d: d["towers"]["image"]["winner"].pop("spec"), "no spec"),
    (lambda d: d["towers"]["image"]["winner"].update(image_size="64"), "image_size"),
])
def test_a_summary_without_a_usable_winner_is_one_line(damage, words):
    doc = copy.deepcopy(SUMMARY)
    damage(doc)
    with pytest.raises(UserError, match=words) as err:
        winner_from_summary(doc, "s/summary.json")
    assert "\n" not in str(err.value) and "s/summary.json" in str(err.value)
    with pytest.raises(UserError, match="no image tower"):
        winner_from_summary([1, 2])


def test_spec_json_and_seeds_are_checked():
    assert parse_spec_json(json.dumps(SPEC)) == SPEC
    for bad in ("{family: vit", "[1, 2]", '{"depth": 3}'):
        with pytest.raises(UserError, match="--spec-json"):
            parse_spec_json(bad)
    assert parse_seeds("0, 1,2", "--seeds") == [0, 1, 2]
    for bad in ("a,b", "", "1,1"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad, "--seeds")


def test_the_winner_row_builds_the_spec_at_its_size():
    recipe = recipe_for(RECIPE, winner_overrides(SPEC, 48), 1, 0)
    assert recipe.students.image.arch == "custom" and recipe.students.image.spec == SPEC
    assert recipe.data.image_size == 48 and recipe.seed == 1
    assert recipe.distill.unpaired_images == "world" and recipe.distill.text_only == "world"
    assert recipe.qat.enabled is False and recipe.export.enabled is False
    with pytest.raises(UserError):  # a spec the image space does not know fails when the row loads
        load_recipe(RECIPE, winner_overrides({"family": "mobilevit", "stem": 24}, 64))


def test_the_reference_row_is_the_ablation_s_dcclip_both_so_its_runs_are_reused():
    base = load_recipe(RECIPE)
    arch = base.students.image.arch
    both = rows(base, 5e-4)["dcclip_both"].overrides
    assert reference_overrides(arch, None) == list(both) == reference_overrides(arch, arch)
    for seed in (0, 2):  # the same run folder (bench.ablation.run_one's key) as the ablation's row
        assert _key(recipe_for(RECIPE, reference_overrides(arch, None), seed, 0), set()) == \
               _key(recipe_for(RECIPE, list(both), seed, 0), set())
    other = recipe_for(RECIPE, reference_overrides(arch, "mobilevit_xs"), 0, 0)
    assert other.students.image.arch == "mobilevit_xs" and other.data.image_size == base.data.image_size
    assert _key(other, set()) != _key(recipe_for(RECIPE, list(both), 0, 0), set())


def _run(bits: str) -> dict:
    split = {"classes": [1, 1, 2, 2, 3, 3], "student": {"en": bits, "zh": bits}, "teacher": {"en": "1" * 6, "zh": "1" * 6}}
    return {"known": split, "eval": split}


def test_verdicts_and_table():
    ref = {(0, 0): _run("100000"), (0, 1): _run("110000"), (0, 2): _run("100000")}
    win = {(0, 0): _run("111100"), (0, 1): _run("111110"), (0, 2): _run("111000")}
    diff = compare(ref, win)  # b − a: winner − reference; per seed +50, +50, +33.3 points
    v = verdicts(diff)
    assert set(v) == {"known", "eval"} and set(v["eval"]) == {"en", "zh"}
    e = v["known"]["en"]
    assert e["diff"] == pytest.approx(100 * (12 / 18 - 4 / 18))
    lo, hi = e["ci95_class_bootstrap"]
    assert lo <= e["diff"] <= hi and e["above_zero_class_bootstrap"] == (lo > 0)
    half = t_quantile(0.975, 2) * 50 / 9  # t * sd / sqrt(3), the sd of (50, 50, 33.3) being 50 / 3 / sqrt(3)
    assert e["ci95_seed_t"] == pytest.approx([e["diff"] - half, e["diff"] + half])
    assert e["above_zero_seed_t"] is True and e["seed_t"] == "above 0"
    result = {"reference": {"name": "mobilevit_xxs", **summarise(ref), "wall_seconds": {"0/0": 100.0, "0/1": 200.0}},
              "winner": {"name": NAME, **summarise(win), "wall_seconds": {"0/0": None}},
              "difference": diff, "verdict": v}
    md = table(result)
    assert "| reference `mobilevit_xxs` | 3 | 22.2 ± 9.6 | 22.2 ± 9.6 | 22.2 ± 9.6 | 22.2 ± 9.6 | 150 |" in md
    assert f"| winner `{NAME}` | 3 | 66.7 ± 16.7 |" in md and md.rstrip().endswith("| |")
    assert f"| winner − reference, 95% seed t interval | 3 | +44.4 [{e['diff'] - half:+.1f}, {e['diff'] + half:+.1f}] |" in md
    assert "| interval (bootstrap / seed t) | | " + f"{e['class_bootstrap']} / above 0 |" in md
    swapped = verdicts(compare(win, ref))["eval"]["zh"]
    assert swapped["diff"] == pytest.approx(-e["diff"]) and swapped["above_zero_seed_t"] is False
    assert swapped["seed_t"] == "below 0" and swapped["above_zero_class_bootstrap"] is False


def test_missing_summary_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--search", str(tmp_path / "search"), "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: search summary") and "not found" in err and "\n" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.json").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--spec-json", "{nope", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
