"""Exact runs, in fresh processes through the installed CLI: the same recipe and seed give bit-identical checkpoints
and identical report numbers; a run SIGKILLed at a random point and resumed ends bit-identical to an uninterrupted
one; `accelerate launch` with two CPU processes (gloo) completes and its per-step losses equal one process's on the
same global batches.

The teacher is a tiny AltCLIP (the real class, saved and loaded with from_pretrained); the student is a ViT, whose
LayerNorms make one process and two processes compute the same thing (BatchNorm would see half batches).
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.hf_fixtures import make_tiny_altclip

BIN = Path(sys.executable).parent
ARTIFACTS = ["student_distill/model.safetensors", "student_fp32/model.safetensors", "student_fp32/tokenizer.json"]
VOLATILE = {"timings_s", "seconds", "latency", "latency_ms", "images_per_s", "artifacts"}


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory, emoji_cache):
    root = tmp_path_factory.mktemp("exact")
    teacher = make_tiny_altclip(root / "altclip")
    recipe = {
        "name": "exact", "seed": 3,
        "data": {"limit": 30, "image_size": 32, "train_renders": 2, "unseen_fraction": 0.2, "cache_dir": str(emoji_cache)},
        "teacher": {"kind": "hf", "spec": str(teacher)},
        "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 400},
                     "embed_dim": 32},
        "distill": {"epochs": 4, "batch_size": 8}, "align": {"epochs": 4, "batch_size": 8, "margin_reg": 0.1},
        "qat": {"epochs": 2, "batch_size": 8}, "export": {"enabled": False},
        "training": {"checkpoint_every": 1, "keep_last": 2},
        "eval": {"splits": ["eval", "unseen"], "latency_runs": 1},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return root, path


def _run(args: list[str], cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or []) + [str(BIN / "dcclip-compress"), *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _numbers(report: Path) -> dict:
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in VOLATILE}
        return [strip(x) for x in o] if isinstance(o, list) else o

    return strip(json.loads(report.read_text(encoding="utf-8")))


def _losses(run: Path) -> list[tuple[str, int, float]]:
    with (run / "logs" / "scalars.csv").open(encoding="utf-8") as f:
        return [(r["stage"], int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def clean_run(setup):
    root, recipe = setup
    start = time.perf_counter()
    res = _run(["run", str(recipe), "--out", "runs/a"], root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "runs/a", time.perf_counter() - start


def test_two_runs_in_fresh_processes_are_bit_identical(setup, clean_run):
    root, recipe = setup
    a, _ = clean_run
    res = _run(["run", str(recipe), "--out", "runs/b"], root)
    assert res.returncode == 0, res.stderr[-3000:]
    b = root / "runs/b"
    for rel in ARTIFACTS:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert _numbers(a / "report.json") == _numbers(b / "report.json")
    assert _losses(a) == _losses(b)
    assert not (a / "checkpoints").exists()  # finished stages leave their artifact, not their checkpoints


def test_sigkill_at_a_random_point_then_resume_is_bit_identical(setup, clean_run):
    root, recipe = setup
    a, seconds = clean_run
    delay = random.Random().uniform(3.0, 0.85 * seconds)  # anywhere from data loading to eval
    proc = subprocess.Popen([str(BIN / "dcclip-compress"), "run", str(recipe), "--out", "runs/k"], cwd=root, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    k = root / "runs/k"
    killed_in = sorted(p.name for p in (k / "checkpoints").iterdir()) if (k / "checkpoints").exists() else []
    res = _run(["run", str(recipe), "--out", "runs/k", "--resume"], root)
    assert res.returncode == 0, f"killed after {delay:.1f}s (checkpoints {killed_in}): {res.stderr[-3000:]}"
    for rel in ARTIFACTS:
        assert (a / rel).read_bytes() == (k / rel).read_bytes(), f"{rel} differs; killed after {delay:.1f}s {killed_in}"
    assert _numbers(a / "report.json") == _numbers(k / "report.json"), f"killed after {delay:.1f}s {killed_in}"
    assert _losses(a) == _losses(k), f"killed after {delay:.1f}s {killed_in}"


def test_resume_mid_stage_continues_from_its_checkpoint(setup, clean_run):
    """Deterministic twin of the random kill: stop inside stage 2, right after one of its mid-stage checkpoints."""
    root, recipe = setup
    a, _ = clean_run
    proc = subprocess.Popen([str(BIN / "dcclip-compress"), "run", str(recipe), "--out", "runs/m"], cwd=root, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = root / "runs/m/checkpoints/align"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and len([p for p in ckpts.iterdir() if p.name.startswith("pos-")]) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts.is_dir(), "the run never reached a stage-2 checkpoint"
    res = _run(["run", str(recipe), "--out", "runs/m", "--resume"], root)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resume: align from pos-" in res.stderr + res.stdout
    for rel in ARTIFACTS:
        assert (a / rel).read_bytes() == (root / "runs/m" / rel).read_bytes(), rel


def test_accelerate_launch_two_cpu_processes_matches_one_process(setup, clean_run):
    root, recipe = setup
    a, _ = clean_run
    launcher = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    res = _run(["run", str(recipe), "--out", "runs/ddp"], root, launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    d = root / "runs/ddp"
    report = json.loads((d / "report.json").read_text(encoding="utf-8"))
    for stage in ("distill", "align"):
        batch = report["training"][stage]["batch"]
        assert batch["world_size"] == 2 and batch["global_batch"] == 8 and batch["per_process_micro_batch"] == 4
    one = {(s, n): v for s, n, v in _losses(a) if s in ("distill", "align")}
    two = {(s, n): v for s, n, v in _losses(d) if s in ("distill", "align")}
    assert one.keys() == two.keys()
    assert two[("distill", 1)] == pytest.approx(one[("distill", 1)], rel=1e-5)  # the first step: the same global batch
    assert two[("align", 1)] == pytest.approx(one[("align", 1)], rel=1e-4)
    for key in one:  # and every later step stays on the single-process trajectory
        assert two[key] == pytest.approx(one[key], rel=1e-3), key
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["logs", "student_distill", "student_fp32"]


def test_a_run_onto_a_full_disk_is_one_line_then_resumes_bit_identical(setup, clean_run, tmp_path):
    """issue 19: a run whose --out is a 5 MB tmpfs (in a private mount namespace) stops with one line and exit 2 when
    the disk fills; remounted with room, `--resume` completes and ends bit-identical to an uninterrupted run."""
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unshare -rm here: a small tmpfs cannot be mounted")
    root, recipe = setup
    a, _ = clean_run
    mnt, keep = tmp_path / "small", tmp_path / "kept"
    mnt.mkdir()
    cli = f"'{BIN / 'dcclip-compress'}' run '{recipe}' --out '{mnt}/run'"
    script = (f"mount -t tmpfs -o size=5m tmpfs '{mnt}' && {{ {cli}; echo rc1=$?; "
              f"mount -o remount,size=200m '{mnt}' && {cli} --resume; echo rc2=$?; cp -r '{mnt}/run' '{keep}'; }}")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=root, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert "rc1=2" in r.stdout and "rc2=0" in r.stdout, (r.stdout, r.stderr[-3000:])
    first = r.stderr.split("rc1")[0] if "rc1" in r.stderr else r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and "Traceback" not in first, r.stderr[-3000:]
    for rel in ARTIFACTS:
        assert (a / rel).read_bytes() == (keep / rel).read_bytes(), rel
    assert _numbers(a / "report.json") == _numbers(keep / "report.json")
