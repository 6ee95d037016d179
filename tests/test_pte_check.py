"""Damaged `.pte` files are stopped before the ExecuTorch runtime sees them: random bytes used to abort the whole
process inside the runtime (`terminate called after throwing`), a truncated file ended in a traceback.

The CLI cases run in process (CliRunner): that is only safe because the check keeps such files from the runtime,
which is what these tests are about. One real subprocess checks that the terminal stays free of the runtime's
`[cpuinfo_utils.cpp:...]` lines.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.errors import UserError
from mobile_export.pte_check import check_pte, parse_header
from mobile_export.runtime import PteModule
from tests.helpers import one_line_exit_2

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def program(tiny_bundle) -> bytes:
    return (tiny_bundle[0] / "text_fp32.pte").read_bytes()


def test_real_program_header(program, tiny_bundle):
    header = check_pte(tiny_bundle[0] / "text_fp32.pte")
    assert header.file_size == len(program)
    assert 0 < header.program_size <= header.segment_base_offset
    assert header.segment_base_offset + header.segment_data_size <= len(program)


def test_random_bytes_are_rejected_before_the_runtime(tmp_path):
    path = tmp_path / "random.pte"
    path.write_bytes(random.Random(0).randbytes(6000))
    with pytest.raises(UserError, match="does not start like an ExecuTorch program") as err:
        PteModule(path)
    assert "\n" not in str(err.value) and "ET12" in str(err.value)


@pytest.mark.parametrize("keep", [0, 7, 39, 200, "program", "minus_one"])
def test_truncated_programs_are_rejected(tmp_path, program, keep):
    size = {"program": len(program) // 4, "minus_one": len(program) - 1}.get(keep, keep)
    path = tmp_path / "cut.pte"
    path.write_bytes(program[:size])
    with pytest.raises(UserError, match="too short|truncated|damaged|identifier") as err:
        PteModule(path)
    assert "\n" not in str(err.value)


def test_header_fields_that_point_outside_the_file(program):
    bad_root = bytearray(program)
    bad_root[0:4] = (len(program) + 10).to_bytes(4, "little")
    with pytest.raises(UserError, match="root table offset"):
        parse_header(bytes(bad_root[:64]), len(program), Path("x.pte"))
    bad_magic = bytearray(program)
    bad_magic[8:12] = b"xx00"
    with pytest.raises(UserError, match="extended header"):
        parse_header(bytes(bad_magic[:64]), len(program), Path("x.pte"))


def test_corrupt_body_with_a_valid_header_is_one_line(tmp_path, program):
    """Past the header the runtime's own flatbuffer verifier takes over; it raises, and PteModule makes it one line."""
    data = bytearray(program)
    program_size = int.from_bytes(data[16:24], "little")
    data[100:program_size] = random.Random(1).randbytes(program_size - 100)
    path = tmp_path / "body.pte"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="could not load") as err:
        PteModule(path)
    assert "\n" not in str(err.value)


def test_bundled_program_passed_as_a_pte_gets_a_hint(tiny_bundle):
    with pytest.raises(UserError, match="BundledProgram"):
        check_pte(tiny_bundle[0] / "text_fp32.bpte")


def test_random_bytes_pte_exits_2_for_eval_bench_and_verify(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], bundle)
    (bundle / "manifest.json").unlink()  # only the structural check stands between the runtime and the file
    (bundle / "text_fp32.pte").write_bytes(random.Random(2).randbytes(5000))
    assert "does not start like an ExecuTorch program" in one_line_exit_2(
        ["bench", str(bundle / "text_fp32.pte"), "--runs", "1", "--out", str(tmp_path / "b")])
    assert "does not start like an ExecuTorch program" in one_line_exit_2(
        ["eval", str(bundle / "text_fp32.pte"), "--splits", "eval", "--limit", "8", "--out", str(tmp_path / "e")])
    assert "does not start like an ExecuTorch program" in one_line_exit_2(
        ["bench", str(bundle), "--runs", "1", "--out", str(tmp_path / "b")])
    verify = tmp_path / "verify"
    shutil.copytree(tiny_bundle[0], verify)
    (verify / "image_fp32.pte").write_bytes(random.Random(3).randbytes(5000))
    assert "image_fp32.pte" in one_line_exit_2(["verify", str(verify)])


def test_terminal_stays_clean_of_runtime_noise(tiny_bundle, tmp_path):
    """A real process (the runtime prints its cpuinfo lines once per process, on the first method load)."""
    proc = subprocess.run(
        [sys.executable, "-m", "compress.cli", "bench", str(tiny_bundle[0] / "text_fp32.pte"), "--runs", "2",
         "--threads", "1", "--out", str(tmp_path / "bench")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cpuinfo" not in proc.stderr and "threadpool" not in proc.stderr, proc.stderr
    assert "| text_fp32 | forward |" in proc.stdout
