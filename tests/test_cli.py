"""The CLI as a user meets it: help text, one-line errors with exit code 2, and a tiny end-to-end run."""
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cmd", [[], ["run"], ["export"], ["eval"], ["bench"], ["targets"], ["classify"], ["embed"]])
def test_every_command_has_help(cmd):
    res = CliRunner().invoke(main, cmd + ["--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and len(res.output.splitlines()) > 4


def _fails_cleanly(args, cwd=ROOT) -> str:
    """Run the real console entry point; it must exit 2 with one line on stderr and no traceback. Returns the line."""
    proc = subprocess.run([sys.executable, "-m", "compress.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_bad_recipe_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstudents:\n  image: {arch: mobilevit_xxxs}\n")
    line = _fails_cleanly(["run", str(bad)])
    assert "students.image.arch" in line and "did you mean 'mobilevit_xxs'?" in line


def test_unknown_key_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nalign: {epocs: 2}\n")
    line = _fails_cleanly(["run", str(bad)])
    assert "align.epocs: unknown key" in line and "epochs" in line
    assert "not found" in _fails_cleanly(["run", str(tmp_path / "missing.yaml")])
    assert "align.epochs" in _fails_cleanly(["run", "recipes/mobilevit_int8.yaml", "--set", "align.epochs=-3"])


def test_other_commands_reject_bad_input(tmp_path):
    assert "neither a run folder nor a checkpoint" in _fails_cleanly(["export", str(tmp_path)])
    assert "not a known target" in _fails_cleanly(["export", str(tmp_path), "--target", "nosuch"])
    assert "not found" in _fails_cleanly(["bench", str(tmp_path / "x.pte")])
    assert "not a split" in _fails_cleanly(["eval", str(tmp_path), "--splits", "nosuch"])


def test_offline_hub_id_says_how_to_pass_a_folder(tmp_path):
    line = _fails_cleanly(["eval", "BAAI/AltCLIP", "--splits", "eval"])
    assert "local folder" in line and "BAAI/AltCLIP" in line


@pytest.mark.parametrize("args, option", [
    (["bench", "x.pte", "--runs", str(10**12)], "--runs"), (["bench", "x.pte", "--warmup", "99999999"], "--warmup"),
    (["bench", "x.pte", "--threads", "100000"], "--threads"), (["bench", "x.pte", "--runs", "many"], "--runs"),
    (["cache-teacher", "r.yaml", "--views", "0"], "--views"), (["cache-teacher", "r.yaml", "--batch-size", "-1"], "--batch-size"),
    (["eval", "--limit", "10000000"], "--limit"), (["classify", "run"], "IMAGES_OR_FOLDER"), (["run", "--nope"], "--nope"),
])
def test_bad_arguments_are_one_line_before_any_work(args, option):
    """issue 19: every numeric option has a range checked up front; click's usage errors are one line, exit 2."""
    res = CliRunner().invoke(main, args)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and option in lines[0] and "--help" in lines[0]


@pytest.mark.parametrize("args, name", [
    (["eval", "s=nowhere", "--suite", "emoji"], "eval.json"), (["eval", "s=nowhere"], "eval.md"),
    (["bench", "x.pte"], "bench.md"), (["bench", "x.pte"], "bench.json"),
])
def test_out_never_overwrites_a_users_file(tmp_path, args, name):
    """issue 19: --out holding a file of the name the command writes, not written by it, is refused in one line before
    any work, and left as it was (export: tests/test_bundle.py; cache-teacher: tests/test_teacher_cache.py)."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text('{"my": "notes"}')
    res = CliRunner().invoke(main, [*args, "--out", str(out)])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "did not write" in lines[0] and name in lines[0], res.output
    assert (out / name).read_text() == '{"my": "notes"}' and [p.name for p in out.iterdir()] == [name]
