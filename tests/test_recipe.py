from pathlib import Path

import pytest

from compress.errors import UserError
from compress.recipe import load_recipe, parse_recipe

RECIPES = sorted(Path(__file__).resolve().parent.parent.glob("recipes/*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert r.name == path.stem


def _error(raw, overrides=()):
    with pytest.raises(UserError) as info:
        parse_recipe(raw, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_student_suggests_the_close_name():
    msg = _error({"name": "x", "students": {"image": {"arch": "mobilevit_xxxs"}}})
    assert "students.image.arch" in msg and "'mobilevit_xxxs' is not a known student" in msg
    assert "did you mean 'mobilevit_xxs'?" in msg


def test_unknown_key_names_its_path_and_the_fix():
    assert "align.epoch: unknown key; did you mean 'epochs'?" in _error({"name": "x", "align": {"epoch": 2}})
    assert "alig: unknown key; did you mean 'align'?" in _error({"name": "x", "alig": {}})


def test_bad_values_name_the_allowed_values():
    assert "export.quant.0: 'int4' is not allowed" in _error({"name": "x", "export": {"quant": ["int4"]}})
    assert "'fp32' or 'int8'" in _error({"name": "x", "export": {"quant": ["int4"]}})
    assert "align.epochs" in _error({"name": "x", "align": {"epochs": -1}})
    assert "name" in _error({})
    assert "data.manifest" in _error({"name": "x", "data": {"kind": "manifest"}})
    assert "teacher.spec" in _error({"name": "x", "teacher": {"kind": "hf"}})


def test_overrides_apply_before_validation():
    r = parse_recipe({"name": "x"}, ["align.epochs=2", "students.image.arch=vit_pico_p8", "align.margin_reg=0.25"])
    assert (r.align.epochs, r.students.image.arch, r.align.margin_reg) == (2, "vit_pico_p8", 0.25)
    assert "distill.lrr: unknown key" in _error({"name": "x"}, ["distill.lrr=1"])
    assert "expected key.path=value" in _error({"name": "x"}, ["align.epochs"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nalign: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_recipe(bad)


def test_fingerprint_tracks_training_settings_only():
    a = parse_recipe({"name": "x"})
    assert a.fingerprint() == parse_recipe({"name": "x", "eval": {"latency_runs": 3}}).fingerprint()
    assert a.fingerprint() != parse_recipe({"name": "x", "align": {"epochs": 9}}).fingerprint()
