"""A whole recipe through the real CLI on tiny data: reference teacher (trained and cached), stage 1, stage 2, int8
QAT, XNNPACK export, eval of every model kind, report; then `eval`, `bench` and `export` on what it wrote."""
import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compress.cli import main
from tests.helpers import home_at

TEACHER = {
    "name": "tiny_teacher", "data": {"limit": 30, "image_size": 32, "train_renders": 2, "unseen_fraction": 0.2},
    "teacher": {"kind": "none"},
    "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_tiny", "context_length": 16, "vocab_size": 400}, "embed_dim": 32},
    "distill": {"enabled": False}, "align": {"epochs": 3, "batch_size": 16, "lr": 1e-3},
    "qat": {"enabled": False}, "export": {"enabled": False}, "eval": {"splits": ["eval"]},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, emoji_cache):
    root = tmp_path_factory.mktemp("e2e")
    TEACHER["data"]["cache_dir"] = str(emoji_cache)
    (root / "teacher.yaml").write_text(yaml.safe_dump(TEACHER))
    student = {
        "name": "tiny_int8", "data": dict(TEACHER["data"]),
        "teacher": {"kind": "reference", "recipe": str(root / "teacher.yaml")},
        # ViT: MobileViT's int8 lowering costs a minute more, and test_qat_export.py checks it (.pte against eager)
        "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 400}, "embed_dim": 32},
        "distill": {"epochs": 2, "batch_size": 16}, "align": {"epochs": 2, "batch_size": 16, "margin_reg": 0.1},
        "qat": {"epochs": 1, "batch_size": 16}, "eval": {"splits": ["eval", "transfer", "unseen"], "latency_runs": 3},
    }
    (root / "student.yaml").write_text(yaml.safe_dump(student))
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=root) as cwd, home_at(cwd):  # .cache/ and runs/ go under the test's folder
        res = runner.invoke(main, ["run", str(root / "student.yaml"), "--out", "runs/tiny"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        yield Path(cwd), res.output


def test_report_has_every_model_and_field(run):
    cwd, output = run
    report = json.loads((cwd / "runs/tiny/report.json").read_text())
    assert "report:" in output and (cwd / "runs/tiny/report.md").is_file() and (cwd / "runs/tiny/zero_shot.png").is_file()
    models = report["models"]
    assert set(models) == {"teacher", "student_fp32", "student_int8", "student_fp32_pte", "student_int8_pte"}
    for name, m in models.items():
        assert isinstance(m["params"], int) and m["params"] > 0
        for split in ("eval", "transfer", "unseen"):
            for lang in ("en", "zh"):
                r = m["zero_shot"][split][lang]
                assert 0.0 <= r["top1"] <= r["top5"] <= 1.0, (name, split, lang)
    for name in ("student_fp32_pte", "student_int8_pte"):
        assert set(models[name]["pte_bytes"]) == {"image", "text"}
        assert all(v > 0 for v in models[name]["latency_ms"].values())
    assert models["student_int8_pte"]["pte_bytes"]["text"] < models["student_fp32_pte"]["pte_bytes"]["text"]
    assert 0 < report["checks"]["int8_to_fp32_pte_bytes_total"] < 1
    assert models["teacher"]["params"] > models["student_fp32"]["params"]
    assert report["data"]["classes"] == report["data"]["splits"]["eval"]["classes"] > 0
    assert report["data"]["used"] > 0 and report["data"]["skipped"] == 0
    assert {"data", "teacher", "distill", "align", "qat", "export", "eval"} <= set(report["timings_s"])
    vocab = report["vocabulary"]  # issue 17: the GB2312 inventory spells every held-out name it covers
    assert vocab["inventory"] == "gb2312" and vocab["size"] > 6763
    for name, row in vocab["unk"].items():
        assert row["texts_with_unk"] <= row["texts_outside_inventory"], name
    assert vocab["unk"]["unseen_zh"]["texts"] > 0 and vocab["unk"]["unseen_zh"]["char_unk_rate"] == 0.0


def test_logs_and_reports_read_right(run):
    """Issue 18 item 7: log lines are whole (no wrap at 80 columns) and carry throughput and ETA; every printed
    report path exists after the run (the teacher's is its cache folder, not the `.partial` one it was written in);
    the teacher's report says it is the teacher; the [UNK] rates of the run's own label set are in the report."""
    import re

    cwd, output = run
    lines = output.splitlines()
    epochs = [line for line in lines if re.search(r": epoch 1/\d+ loss .*steps/s · .*samples/s · ETA \d", line)]
    assert epochs, lines
    assert any(re.search(r": done \(\d+ steps, \w+, [\d.]+ steps/s\)$", line) for line in lines), lines
    printed = re.findall(r"report: (\S+report\.md) \(json: (\S+report\.json)\)", output)
    assert printed and not any(".partial" in p for pair in printed for p in pair), printed  # the teacher's, the run's
    for pair in printed:
        assert all((cwd / p).is_file() for p in pair), pair
    said = re.search(r"^reference teacher: .*cached (?:at|in) (\S+?)\)?$", output, re.M)  # one line, not wrapped
    assert len(said.group(0)) > 80, said.group(0)
    teacher = Path(said.group(1))
    assert json.loads((cwd / teacher / "report.json").read_text())["role"] == "reference_teacher"
    assert "trains the reference teacher" in (cwd / teacher / "report.md").read_text()
    if "reference teacher: training once" in output:  # its report was written in `<folder>.partial`, then renamed
        assert (cwd / printed[0][0]).resolve() == (cwd / teacher / "report.md").resolve() and len(printed) == 2
    report = json.loads((cwd / "runs/tiny/report.json").read_text())
    assert "role" not in report
    from mobile_export.bundle.labels import emoji_labels

    unk = report["vocabulary"]["unk"]
    for lang in ("en", "zh"):
        row = unk[f"labels_{lang}"]
        assert row["texts"] == len(emoji_labels()) > 0 and 0.0 <= row["text_unk_rate"] <= 1.0
        assert row["texts_with_unk"] <= row["texts_outside_inventory"] and 0.0 <= row["char_unk_rate"] <= 1.0
        assert f"elevater_{lang}" in unk
    md = (cwd / "runs/tiny/report.md").read_text()
    assert "| labels_zh | " in md and "![zero-shot top-1 (%)" in md and "each epoch's mean bold" in md


def test_fp32_pte_scores_like_eager(run):
    cwd, _ = run
    models = json.loads((cwd / "runs/tiny/report.json").read_text())["models"]
    n = json.loads((cwd / "runs/tiny/report.json").read_text())["data"]["splits"]["eval"]["images"]
    for lang in ("en", "zh"):
        eager = models["student_fp32"]["zero_shot"]["eval"][lang]["top1"]
        pte = models["student_fp32_pte"]["zero_shot"]["eval"][lang]["top1"]
        assert abs(eager - pte) <= 1.0 / n + 1e-9  # at most one image flips


def test_teacher_is_cached_for_the_next_run(run):
    cwd, _ = run
    cached = list((cwd / ".cache/teachers").glob("tiny_teacher-*/student_fp32/model.safetensors"))
    assert len(cached) == 1


def test_eval_bench_and_export_commands_on_the_run(run):
    cwd, _ = run
    runner = CliRunner()
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = runner.invoke(main, ["eval", "runs/tiny/export", "--splits", "eval", "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        # emoji cache of the test session is elsewhere: eval builds the same split into .cache/emoji here
        out = json.loads(res.stdout)
        assert 0.0 <= out["results"]["emoji"]["tiny/export"]["eval"]["en"]["top1"] <= 1.0
        res = runner.invoke(main, ["bench", "runs/tiny/export/image_int8.pte", "--runs", "3", "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        bench = json.loads(res.stdout)["models"][0]["methods"][0]
        for key in ("model_load_time(ms)", "avg_inference_latency(ms)", "trimmean_inference_latency(ms)"):
            assert bench[key] > 0
        res = runner.invoke(main, ["verify", "runs/tiny/export"], catch_exceptions=False)  # the run's export is a bundle
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["export", "runs/tiny", "--target", "xnnpack", "--quant", "int8", "--out", "exp"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert "reused the run's QAT int8 export" in res.output
        assert (cwd / "exp/image_int8.pte").read_bytes() == (cwd / "runs/tiny/export/image_int8.pte").read_bytes()
        assert json.loads((cwd / "exp/bundle.json").read_text())["files"]["int8"]["text"] == "text_int8.pte"
    finally:
        os.chdir(old)


def test_eval_compares_eager_fp32_pte_and_int8_on_every_emoji_suite(run):
    """`eval` on the run: the fp32 .pte through the ExecuTorch runtime scores like the eager student (within 0.5
    point), and the table is the README's format (en and zh side by side, deltas vs the first model)."""
    cwd, _ = run
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(main, [
            "eval", "eager=runs/tiny", "fp32pte=runs/tiny/export/image_fp32.pte", "int8=runs/tiny/export",
            "--suite", "emoji,retrieval", "--out", "runs/tiny/eval"], catch_exceptions=False)
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output
    result = json.loads((cwd / "runs/tiny/eval/eval.json").read_text())
    emoji, retrieval = result["results"]["emoji"], result["results"]["retrieval"]
    for split in ("eval", "transfer", "unseen"):
        for lang in ("en", "zh"):
            for k in ("top1", "top5"):
                assert abs(emoji["eager"][split][lang][k] - emoji["fp32pte"][split][lang][k]) <= 0.005, (split, lang, k)
    for lang in ("en", "zh"):
        assert abs(retrieval["eager"]["emoji"][lang]["mean_recall"] - retrieval["fp32pte"]["emoji"][lang]["mean_recall"]) <= 0.005
    assert "| dataset | metric | eager en | eager zh | fp32pte en | fp32pte zh | int8 en | int8 zh |" in res.output
    assert "| eval | top-1 |" in res.output and "| emoji | mean recall |" in res.output
    assert "| emoji | eager | zh |" in res.output  # retrieval detail rows
    assert (cwd / "runs/tiny/eval/eval.png").is_file() and (cwd / "runs/tiny/eval/eval.md").is_file()


def test_eval_elevater_suite_through_the_int8_pte(run, tmp_path):
    """The int8 .pte (ExecuTorch runtime, fixed 32 px input) on an ImageFolder dataset: photo-sized images are
    resized and centre-cropped to the model's input, both languages are scored, a missing dataset is skipped."""
    from PIL import Image

    cwd, _ = run
    for i in range(10):
        folder = tmp_path / "data/mnist/test" / str(i)
        folder.mkdir(parents=True)
        Image.new("RGB", (120, 90), (20 * i, 255 - 20 * i, 128)).save(folder / "a.jpg")
    res = CliRunner().invoke(main, [
        "eval", f"int8={cwd / 'runs/tiny/export/image_int8.pte'}", "--suite", "elevater", "--datasets", "mnist,dtd",
        "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "rep"), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    r = out["results"]["elevater"]["int8"]["mnist"]
    assert r["n"] == 10 and r["layout"] == "image_folder" and out["models"][0]["image_size"] == 32
    assert all(0.0 <= r[lang]["top1"] <= r[lang]["top5"] <= 1.0 for lang in ("en", "zh"))
    assert "dtd" in out["skipped"]["elevater"]
