"""The CLI as a user meets it: help text, one-line errors with exit code 2, and a tiny end-to-end run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("cmd", [[], ["run"], ["export"], ["eval"], ["bench"], ["targets"]])
def test_every_command_has_help(cmd):
    res = CliRunner().invoke(main, cmd + ["--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and len(res.output.splitlines()) > 4


def _fails_cleanly(args, *fragments, cwd=ROOT):
    """Run the real console entry point: exit 2, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "compress.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0]
    return lines[0]


def test_bad_recipe_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstudents:\n  image: {arch: mobilevit_xxxs}\n")
    _fails_cleanly(["run", str(bad)], "students.image.arch", "did you mean 'mobilevit_xxs'?")


def test_unknown_key_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nalign: {epocs: 2}\n")
    _fails_cleanly(["run", str(bad)], "align.epocs: unknown key", "epochs")
    _fails_cleanly(["run", str(tmp_path / "missing.yaml")], "not found")
    _fails_cleanly(["run", "recipes/mobilevit_int8.yaml", "--set", "align.epochs=-3"], "align.epochs")


def test_other_commands_reject_bad_input(tmp_path):
    _fails_cleanly(["export", str(tmp_path)], "neither a run folder nor a checkpoint")
    _fails_cleanly(["export", str(tmp_path), "--target", "nosuch"], "not a known target")
    _fails_cleanly(["bench", str(tmp_path / "x.pte")], "not found")
    _fails_cleanly(["eval", str(tmp_path), "--splits", "nosuch"], "not a split")


def test_offline_hub_id_says_how_to_pass_a_folder(tmp_path):
    line = _fails_cleanly(["eval", "BAAI/AltCLIP", "--splits", "eval"], "local folder")
    assert "BAAI/AltCLIP" in line
