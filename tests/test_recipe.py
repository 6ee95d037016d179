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


def _load_error(tmp_path, content: bytes | str) -> str:
    path = tmp_path / "r.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


BASE_TEXT = (Path(__file__).resolve().parent.parent / "recipes" / "mobilevit_int8.yaml").read_text(encoding="utf-8")


def test_numbers_are_numbers_and_finite():
    assert parse_recipe({"name": "x", "align": {"lr": 1}}).align.lr == 1.0  # an int is fine for a float
    assert "align.lr: input should be a valid number (got '0.001'); write numbers" in _error({"name": "x", "align": {"lr": "0.001"}})
    assert "align.epochs: input should be a valid integer (got True)" in _error({"name": "x", "align": {"epochs": True}})
    assert "align.epochs: input should be a valid integer (got 2.5)" in _error({"name": "x", "align": {"epochs": 2.5}})
    for bad in (float("inf"), float("-inf"), float("nan")):
        assert "align.margin: input should be a finite number" in _error({"name": "x", "align": {"margin": bad}})
    assert "seed: input should be greater than or equal to 0" in _error({"name": "x", "seed": -1})
    assert "eval.latency_runs: input should be less than or equal to" in _error({"name": "x", "eval": {"latency_runs": 10**9}})
    assert "teacher.map_layers.0: input should be less than or equal to 1000" in _error({"name": "x", "teacher": {"map_layers": [5000]}})


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as text; the recipe loader reads it as YAML 1.2 does, so 1e400 is infinity."""
    path = tmp_path / "r.yaml"
    path.write_text(BASE_TEXT.replace("  lr: 2.0e-3", "  lr: 1e-3").replace("  lr: 1.0e-5", "  lr: 5E-5"))
    r = load_recipe(path)
    assert (r.distill.lr, r.qat.lr) == (1e-3, 5e-5)
    assert "distill.lr: input should be a finite number (got inf)" in _load_error(tmp_path, BASE_TEXT.replace("  lr: 2.0e-3", "  lr: 1e400"))
    assert "distill.lr: input should be a valid number (got '1e-3')" in _load_error(tmp_path, BASE_TEXT.replace("  lr: 2.0e-3", "  lr: '1e-3'"))


def test_files_that_are_not_utf8_yaml(tmp_path):
    for codec in ("gbk", "latin-1", "utf-16"):
        msg = _load_error(tmp_path, ("# 注释 é\n" if codec != "latin-1" else "# café\n").encode(codec, "replace") + BASE_TEXT.encode(codec))
        assert "r.yaml' is not UTF-8 text" in msg and "a recipe must be UTF-8 YAML" in msg, msg
    assert "contains NUL bytes" in _load_error(tmp_path, BASE_TEXT.encode("utf-16-le"))
    assert "character #x0007 is not allowed in YAML" in _load_error(tmp_path, BASE_TEXT + "# bell \a\n")
    with pytest.raises(UserError, match="is a directory"):
        load_recipe(tmp_path)
    assert "at most 1048576 bytes" in _load_error(tmp_path, BASE_TEXT + "#" * (1 << 20))
    assert load_recipe(_write(tmp_path, ("\ufeff" + BASE_TEXT).encode())).name == "mobilevit_int8"  # a UTF-8 BOM is fine


def _write(tmp_path, data: bytes) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_bytes(data)
    return path


def test_unreadable_file(tmp_path, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert "cannot be read (Permission denied); check its permissions" in _load_error(tmp_path, BASE_TEXT)


def test_yaml_structure_problems(tmp_path):
    msg = _load_error(tmp_path, "name: x\nalign:\n  lr: 1.0e-3\n  epochs: 2\n  lr: 2.0e-3\n")
    assert "key 'lr' is given twice in one mapping (lines 3 and 5); keep one of them" in msg
    assert "given twice" in _load_error(tmp_path, BASE_TEXT.replace("  lr: 2.0e-3\n", "  lr: 2.0e-3\n  epochs: 5\n"))
    assert "key 'lr' is given twice in one mapping (line 1)" in _error({"name": "x"}, ["align={lr: 1, lr: 2}"])
    assert "got nothing (the file is empty)" in _load_error(tmp_path, "# nothing here\n")
    assert "expected a mapping of sections (name, data, teacher, ...), got list" in _load_error(tmp_path, "- name: x\n")
    assert "nested too deeply" in _load_error(tmp_path, "name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "lone UTF-16 surrogate" in _load_error(tmp_path, 'name: x\n"\\ud800": 1\n')
    assert "could not determine a constructor" in _load_error(tmp_path, "name: !!python/object/apply:os.system [true]\n")
    assert "name: input should be a valid string (got datetime.date(2024, 5, 1))" in _load_error(tmp_path, "name: 2024-05-01\n")
    assert "a value cannot be read (month must be in 1..12)" in _load_error(tmp_path, "name: !!timestamp 2024-13-01\n")
    # a key with line breaks in it is quoted, so the message stays one line
    assert "'a\\nb\\u2028': unknown key" in _load_error(tmp_path, BASE_TEXT + '"a\\nb\\u2028": 1\n')


def test_anchors_and_merge_keys_still_work(tmp_path):
    base = "".join(l for l in BASE_TEXT.splitlines(keepends=True) if not l.startswith(("  unpaired_images:", "  text_only:")))
    text = base.replace("distill:\n  epochs: 30\n", "distill: &stage\n  epochs: 30\n")
    assert text.count("  epochs: 12\n") == 1  # the qat block's
    text = text.replace("  epochs: 12\n", "  <<: *stage\n  epochs: 12\n")  # merged keys may be overridden
    r = load_recipe(_write(tmp_path, text.encode()), ["distill.epochs=7"])
    assert (r.distill.epochs, r.qat.epochs, r.qat.lr, r.qat.batch_size) == (7, 12, 1e-5, 128)
    shared = load_recipe(_write(tmp_path, base.replace("distill:\n", "distill: &s\n").split("align:")[0].encode()
                                + b"align: *s\n"), ["align.epochs=2"])
    assert (shared.distill.epochs, shared.align.epochs) == (30, 2)  # --set only changes the section it names


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Atomic writes must not leave mkstemp's 0600: run folders and bundles are shared and pushed to phones."""
    import os
    import stat

    from compress.atomic import write_text

    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "a.txt").read_text() == "x"


# ------------------------------------------------------------------------------------------------ names, at load time
def test_a_typo_in_export_target_fails_before_any_work():
    """User report: `--set export.target=xnpack` passed validation and failed after hours of training. The real
    console script, in a child process: exit 2, one line that names the key path, the bad value and the fix."""
    import subprocess
    import sys
    import time

    cli = Path(sys.executable).with_name("dcclip-compress")
    root = Path(__file__).resolve().parent.parent
    start = time.monotonic()
    res = subprocess.run([str(cli), "run", "recipes/mobilevit_int8.yaml", "--set", "export.target=xnpack"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "export.target: 'xnpack' is not a known target; did you mean 'xnnpack'?" in lines[0], lines[0]
    assert took < 60, f"the recipe check took {took:.0f} s: something imports or trains before validating"


@pytest.mark.parametrize("raw, expected", [
    ({"export": {"target": "xnpack"}}, "export.target: 'xnpack' is not a known target; did you mean 'xnnpack'?"),
    ({"export": {"target": "tpu"}}, "export.target: 'tpu' is not a known target; known: "),
    ({"export": {"npu": ["ethos-u85", "ethos-u56"]}}, "export.npu.1: 'ethos-u56' is not a known NPU target; did you mean"),
    ({"export": {"npu": ["xnnpack"]}}, "export.npu.0: 'xnnpack' is a target but not an int8 NPU; known: ethos-u55, ethos-u85"),
    ({"export": {"target": "ethos-u85"}}, "export.quant: target 'ethos-u85' runs int8 only; set export.quant: [int8]"),
    ({"qat": {"scheme": "8da4"}}, "qat.scheme: '8da4' is not a known quantization scheme; did you mean '8da4w'?"),
    ({"qat": {"compare": ["ptq-int8", "8da8"]}}, "qat.compare.1: '8da8' is not a known quantization scheme; did you mean '8da8w'?"),
    ({"students": {"text": {"arch": "text_tine"}}}, "students.text.arch: 'text_tine' is not a known text student; did you mean 'text_tiny'?"),
    ({"search": {"device": "hots"}}, "search.device: 'hots' is not a known search device; did you mean 'host'?"),
    ({"search": {"device": "phone:1"}}, "search.device: 'phone' is not a known search device; known: adb, host"),
    ({"search": {"device": "host:1"}}, "search.device: 'host:1' is not a device; write host, adb, or adb:SERIAL"),
    ({"search": {"device": "adb:"}}, "search.device: 'adb:' is not a device"),
])
def test_every_name_is_checked_with_a_did_you_mean(raw, expected):
    msg = _error({"name": "x", **raw})
    assert msg.startswith("recipe: ") and expected in msg, msg


def test_names_that_load():
    r = parse_recipe({"name": "x", "export": {"target": "xnnpack", "npu": ["ethos-u55", "ethos-u85"]},
                      "search": {"device": "adb:emulator-5554"}})
    assert (r.export.target, r.export.npu, r.search.device) == ("xnnpack", ["ethos-u55", "ethos-u85"], "adb:emulator-5554")
    assert parse_recipe({"name": "x", "search": {"device": "adb"}}).search.device == "adb"
    assert parse_recipe({"name": "x", "export": {"target": "ethos-u85", "quant": ["int8"]}}).export.target == "ethos-u85"


def test_targets_are_checked_against_the_target_table(monkeypatch):
    """The recipe asks mobile_export's table, so a newly registered target is a valid export.target at once."""
    from mobile_export.lower import targets

    assert "my-npu" in _error({"name": "x", "export": {"target": "my-npu"}})
    monkeypatch.setitem(targets.TARGETS, "my-npu", targets.TARGETS["xnnpack"])
    assert parse_recipe({"name": "x", "export": {"target": "my-npu"}}).export.target == "my-npu"


def test_the_face_reexports_the_same_objects():
    import compress.recipe as face
    from compress.recipe import load, schema

    assert face.Recipe is schema.Recipe and face.load_recipe is load.load_recipe
    assert face.TRAINING_VERSION == schema.TRAINING_VERSION
    assert all(hasattr(face, name) for name in face.__all__)
