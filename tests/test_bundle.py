"""The app-ready export bundle (`export --labels`, `verify`) and the latency report (`bench`), through the real CLI,
the real ExecuTorch runtime and a tiny random student (the `tiny_bundle` fixture in conftest.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.atomic import sha256_file
from compress.errors import UserError
from mobile_export.bench.schema import BenchReport
from mobile_export.bundle.labels import read_labels
from tests.fuzz import NO_SHRINK
from tests.helpers import invoke, one_line_exit_2


@pytest.fixture
def copy(tiny_bundle, tmp_path) -> Path:
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], folder)
    return folder


def test_bundle_holds_what_an_app_needs(tiny_bundle):
    folder, _ = tiny_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("image_fp32.pte", "text_fp32.pte", "image_fp32.bpte", "text_fp32.bpte", "tokenizer.json",
                 "preprocess.json", "labels.json", "label_embeddings_fp32.f32", "bundle.json"):
        assert manifest["files"][name] == {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    assert manifest["versions"]["executorch"] and manifest["versions"]["torch"]
    image = manifest["programs"]["image_fp32.pte"]
    assert image["inputs"] == [{"shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert image["outputs"] == [{"shape": [1, 32], "dtype": "float32"}]
    assert manifest["programs"]["text_fp32.pte"]["inputs"] == [{"shape": [1, 16], "dtype": "int64"}]
    bundle = json.loads((folder / "bundle.json").read_text())  # the Android helper's keys are still there
    assert {"embed_dim", "image_size", "context_length", "pad_id", "files", "prompt_templates"} <= set(bundle)
    pre = json.loads((folder / "preprocess.json").read_text())["image"]
    assert pre["layout"] == "NCHW" and pre["channel_order"] == "RGB" and pre["value_range"] == [0.0, 1.0]
    assert pre["resize"]["filter"] == "bilinear" and pre["normalization"]["inside_model"] is True
    assert len(pre["normalization"]["mean"]) == 3


def test_labels_file_round_trip(tiny_bundle):
    folder, labels_file = tiny_bundle
    doc = json.loads((folder / "labels.json").read_text())
    assert [(r["id"], r["en"], r["zh"]) for r in doc["labels"]] == [
        ("1", "dog face", "狗脸"), ("2", "red apple", "红苹果"), ("3", "car", "汽车")]
    entry = doc["embeddings"]["fp32"]
    assert entry["shape"] == [2, 3, 32] and entry["byte_order"] == "little"
    emb = np.fromfile(folder / entry["file"], dtype="<f4").reshape(entry["shape"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
    assert [l.en for l in read_labels(labels_file)] == ["dog face", "red apple", "car"]


def test_labels_jsonl_and_bad_files(tmp_path):
    good = tmp_path / "l.jsonl"
    good.write_text('{"en": "dog", "zh": "狗"}\n\n{"en": "cat", "zh": "猫", "id": 7}\n', encoding="utf-8")
    assert [(l.en, l.zh, l.id) for l in read_labels(good)] == [("dog", "狗", None), ("cat", "猫", "7")]
    cases = {
        "a.jsonl": ('{"id": "dog"}\n', "has no en or zh name"),
        "b.jsonl": ('{"en": "dog", "zh": "狗"}\nnot json\n', "b.jsonl:2': is not valid JSON"),
        "c.tsv": ("name\tid\ndog\t狗\n", "names no en or zh column"),
        "d.tsv": ("en\tzh\ndog\t狗\nDog\t犬\n", "repeats the en name"),
        "e.csv": ("en,zh\n", "unknown extension"),
        "f.jsonl": ("\n", "holds no labels"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message) as err:
            read_labels(tmp_path / name)
        assert "\n" not in str(err.value)


def test_verify_passes_on_a_fresh_bundle(tiny_bundle):
    res = invoke(["verify", str(tiny_bundle[0])])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "image_fp32.pte: 2 bundled samples reproduce" in res.output and "ok:" in res.output


def test_verify_fails_on_a_truncated_pte(copy):
    data = (copy / "image_fp32.pte").read_bytes()
    (copy / "image_fp32.pte").write_bytes(data[: len(data) // 2])
    assert "image_fp32.pte" in one_line_exit_2(["verify", str(copy)])
    (copy / "manifest.json").unlink()  # without a manifest it is no bundle at all
    assert "no manifest.json" in one_line_exit_2(["verify", str(copy)])


@pytest.mark.parametrize("name", ["labels.json", "label_embeddings_fp32.f32", "text_fp32.bpte", "text_fp32.pte"])
def test_verify_fails_on_an_altered_file(copy, name):
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    line = one_line_exit_2(["verify", str(copy)])
    assert name in line and "sha256" in line


def test_altered_program_in_a_bundle_is_refused_by_every_loader(copy, tmp_path):
    """eval and bench check a bundle's .pte against its manifest too, not only verify."""
    data = bytearray((copy / "text_fp32.pte").read_bytes())
    data[-10] ^= 0x01  # inside the weights: a structurally valid program with other numbers
    (copy / "text_fp32.pte").write_bytes(bytes(data))
    assert "sha256" in one_line_exit_2(["bench", str(copy), "--runs", "1", "--out", str(tmp_path / "b")])


def test_bench_host_report_validates_against_the_schema(tiny_bundle, tmp_path):
    res = invoke(["bench", str(tiny_bundle[0]), "--device", "host", "--runs", "4", "--warmup", "1", "--threads", "1",
                  "--json", "--out", str(tmp_path / "bench")])
    assert res.exit_code == 0, (res.output, res.exception)
    report = BenchReport.model_validate(json.loads(res.stdout))
    written = BenchReport.model_validate(json.loads((tmp_path / "bench/bench.json").read_text()))
    assert written.models[0].sha256 == report.models[0].sha256
    assert [m.model for m in report.models] == ["image_fp32", "text_fp32"]
    assert report.device.kind == "host" and report.device.threads == 1 and report.settings.runs == 4
    for model in report.models:
        (method,) = model.methods  # constant methods (embedded metadata) are not timed
        assert method.method == "forward" and method.runs == 4 and len(method.latencies_ms) == 4
        assert 0 < method.median_ms <= method.p90_ms and method.model_load_time_ms > 0
        assert model.peak_rss_mb > 0 and model.top_ops and model.top_ops[0].median_ms > 0
    raw = json.loads(res.stdout)["models"][0]["methods"][0]
    for key in ("model_load_time(ms)", "avg_inference_latency(ms)", "trimmean_inference_latency(ms)",
                "median_inference_latency(ms)", "p90_inference_latency(ms)"):
        assert raw[key] > 0
    assert BenchReport.model_json_schema(by_alias=True)["properties"]["schema_version"]
    assert (tmp_path / "bench/bench.png").stat().st_size > 0
    assert "| image_fp32 | forward | measured |" in (tmp_path / "bench/bench.md").read_text()


def test_mistyped_target_and_device_get_a_did_you_mean(tiny_bundle, tmp_path):
    assert "did you mean 'xnnpack'?" in one_line_exit_2(["export", str(tmp_path), "--target", "xnnpak"])
    assert "did you mean 'host'?" in one_line_exit_2(["bench", str(tiny_bundle[0]), "--device", "hots"])


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_never_overwrites_a_users_folder_and_replaces_only_its_own_bundle(tiny_bundle, tmp_path):
    """issue 19: --out with a user's labels.json / tokenizer.json is refused in one line and left as it was; a bundle
    of ours is replaced whole; a failed export leaves the old bundle and no folder `verify` would take for one."""
    from compress.model import load_checkpoint
    from compress.pipeline.export import export_model

    ckpt = tiny_bundle[0].parent / "ckpt"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "labels.json").write_text('{"my": "labels"}')
    (mine / "tokenizer.json").write_text("my own tokenizer")
    before = _tree(mine)
    line = one_line_exit_2(["export", str(ckpt), "--quant", "fp32", "--out", str(mine)])
    assert "not a dcclip-compress bundle" in line and "labels.json" in line and _tree(mine) == before

    ours = tmp_path / "ours"
    shutil.copytree(tiny_bundle[0], ours)
    (ours / "stale.txt").write_text("from an older export")
    model, tok, _ = load_checkpoint(ckpt)
    with pytest.raises(RuntimeError, match="killed"):  # dies after its first .pte, as a kill would
        export_model(model, tok, "xnnpack", ["fp32"], ours, say=lambda line: (_ for _ in ()).throw(RuntimeError("killed")))
    assert _tree(ours)["manifest.json"] == _tree(tiny_bundle[0])["manifest.json"]  # the old bundle, whole
    assert not (tmp_path / ".ours.partial").exists()  # the failed export's files are gone (a kill leaves them hidden)
    assert invoke(["export", str(ckpt), "--quant", "fp32", "--out", str(ours)]).exit_code == 0
    assert not (ours / "stale.txt").exists() and not (tmp_path / ".ours.partial").exists()
    assert set(json.loads((ours / "manifest.json").read_text())["files"]) == set(_tree(ours)) - {"manifest.json"}


@pytest.mark.parametrize("damage", [
    lambda m: m["files"].update({"tokenizer.json": "not a dict"}), lambda m: m.update(programs=["image_fp32.pte"]),
    lambda m: m["programs"]["image_fp32.pte"].update(bundled_program=3),
    lambda m: m["programs"]["image_fp32.pte"].pop("bundled_program"),
])
def test_verify_with_a_manifest_entry_of_the_wrong_shape_is_one_line(copy, damage):
    """issue 19: a hand-edited manifest (an entry of the wrong type) is refused in one line, not an AttributeError."""
    m = json.loads((copy / "manifest.json").read_text())
    damage(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    assert "manifest.json" in one_line_exit_2(["verify", str(copy)])


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tiny_bundle, tmp_path):
    """issue 19: ENOSPC while writing the bundle (a 64 kB tmpfs, in a private mount namespace): one line, exit 2, the
    temporary files removed. (With room, the same command is every other export here: `tiny_bundle` is one.)"""
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unshare -rm here: a small tmpfs cannot be mounted")
    mnt = tmp_path / "small"
    mnt.mkdir()
    ckpt = tiny_bundle[0].parent / "ckpt"
    cli = f"'{sys.executable}' -m compress.cli export '{ckpt}' --quant fp32 --out '{mnt}/bundle' --labels '{tiny_bundle[1]}'"
    script = f"mount -t tmpfs -o size=64k tmpfs '{mnt}' && {cli}; echo rc=$? left=$(ls -A '{mnt}' | wc -l)"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert "rc=2 left=0" in r.stdout and len(errors) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr[-2000:]
    assert "no space left" in errors[0]


DAMAGED_CHECKPOINTS = [
    ("model.safetensors", lambda b: b[: len(b) // 2]), ("model.safetensors", lambda b: b"\x80\x04\x95pickle" + b[:64]),
    ("model.json", lambda b: b[:10]), ("model.json", lambda b: b'{"spec": 3}'), ("tokenizer.json", lambda b: b"{junk"),
]


@pytest.mark.parametrize("damage", DAMAGED_CHECKPOINTS)
def test_a_damaged_checkpoint_is_one_line_for_export_and_eval(tiny_bundle, tmp_path, damage):
    """issue 19: a truncated or replaced checkpoint file is one line (exit 2) naming the file, for every command."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bundle[0].parent / "ckpt", ckpt)
    name, change = damage
    (ckpt / name).write_bytes(change((ckpt / name).read_bytes()))
    assert name in one_line_exit_2(["export", str(ckpt), "--quant", "fp32", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()
    if damage is DAMAGED_CHECKPOINTS[0]:  # eval reads checkpoints through the same loader (once is enough here)
        assert name in one_line_exit_2(["eval", f"s={ckpt}", "--suite", "emoji", "--limit", "8",
                                        "--out", str(tmp_path / "e")])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(data=st.data())
def test_a_damaged_bundle_is_one_line(tiny_bundle, tmp_path_factory, data):
    """issue 19, fuzzed: any file of the bundle with damaged bytes (each is in manifest.json with its size and sha256:
    always exit 2), or manifest.json with one node of its structure changed (exit 2, or exit 0 when the node is one
    `verify` does not read, such as a note), through `verify` in process; nothing in the bundle changes."""
    from tests.fuzz import cli, clean_outcome, damage_file, tree_hash

    work = tmp_path_factory.mktemp("case")
    folder = work / "bundle"
    shutil.copytree(tiny_bundle[0], folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    name = data.draw(st.sampled_from(files))
    structural = name == "manifest.json" and data.draw(st.booleans())
    what = damage_file(folder / name, data.draw, json_within=() if structural else None)
    before = tree_hash(work)
    clean_outcome(cli(["verify", str(folder)]), what, ok_allowed=structural)
    assert tree_hash(work) == before, what
