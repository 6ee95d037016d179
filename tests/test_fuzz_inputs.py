"""Hypothesis-generated damage to what the CLI reads (issue 19), driven through the CLI in process: a student
checkpoint (`export`) and an evaluation data set (`eval --suite elevater`). Every case ends in exit 2 with one
`error:` line and no traceback, and nothing outside the command's own output folder changes. (Bundles and the
teacher cache: test_bundle.py and test_teacher_cache.py, through `verify`.)

Accepted rather than refused: evaluation rows that are still valid after the damage (another label in range, an
extra key) are evaluated (exit 0). A checkpoint's model.json carries the sha256 of its weights and tokenizer, so any
change to those two files is refused; model.json itself is damaged field by field.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from compress.model import DualEncoder, DualEncoderSpec, load_checkpoint, save_checkpoint
from compress.tokenizer import BilingualTokenizer, train_tokenizer
from tests.fuzz import JSON_VALUES, NO_SHRINK, cli, clean_outcome, damage_file, linked_copy, mutate_json, tree_hash

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    tok = BilingualTokenizer(train_tokenizer(["a photo of a cat", "一张猫的照片", "dog 狗", "digit 数字"], 200), 16)
    torch.manual_seed(0)
    save_checkpoint(DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 16, 32, 16, tok.vocab_size)), tok,
                    root / "ckpt")
    return root / "ckpt"


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """An ELEVATER mnist folder in the test.jsonl layout: 4 images, labels 0..3."""
    root = tmp_path_factory.mktemp("fuzz-eval")
    for i in range(4):
        (root / "mnist/img").mkdir(parents=True, exist_ok=True)
        (root / f"mnist/img/{i}.png").write_bytes(_png(40 * i))
    rows = [{"image": f"img/{i}.png", "label": i} for i in range(4)]
    (root / "mnist/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


CKPT_FILES = ["model.json", "model.safetensors", "tokenizer.json"]


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_is_one_line(ckpt, tmp_path_factory, data):
    work = tmp_path_factory.mktemp("case")
    folder = linked_copy(ckpt, work / "ckpt")
    name = data.draw(st.sampled_from(CKPT_FILES))
    path = folder / name
    if name == "model.json" and data.draw(st.booleans()):  # one field of the spec: deleted, retyped or resized
        doc = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
        key = data.draw(st.sampled_from(sorted(doc["spec"]) + ["?"]))
        old = doc["spec"].get(key)
        # a searched-architecture spec given as an object is a different model by design: damage it with a non-object
        new = data.draw(JSON_VALUES.filter(lambda v: v != old and not (key.endswith("_spec") and isinstance(v, dict))))
        if key != "?" and not key.endswith("_spec") and data.draw(st.booleans()):  # *_spec default to null
            del doc["spec"][key]
        else:
            doc["spec"][key] = new
        path.write_text(json.dumps(doc), encoding="utf-8")
        what = f"model.json spec.{key}: {old!r} -> {doc['spec'].get(key, '(deleted)')!r}"
    else:  # bytes, or for the tokenizer any node of its structure (all covered by model.json's sha256)
        what = damage_file(path, data.draw, json_within=() if name == "tokenizer.json" else None)
    before = tree_hash(work)
    res = cli(["export", str(folder), "--quant", "fp32", "--out", str(work / "out")])
    # exit 0 only when the damage left the very model: a byte flip that renames model.json's "sha256" key leaves a
    # checkpoint of the form written before hashes were recorded, with its spec and files intact (found by this test)
    if clean_outcome(res, what, ok_allowed=name == "model.json") == 0:
        model, _, _ = load_checkpoint(folder)
        original, _, _ = load_checkpoint(ckpt)
        assert model.spec == original.spec and all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values())), what
        assert tree_hash(work, skip=work / "out") == before, what
        return
    assert tree_hash(work) == before and not (work / "out").exists(), what


def _eval(ckpt, root, out):
    return cli(["eval", f"s={ckpt}", "--suite", "elevater", "--datasets", "mnist", "--data-root",
                str(root), "--out", str(out)])


@FUZZ
@given(data=st.data())
def test_damaged_evaluation_data_is_one_line_or_evaluated(ckpt, mnist, tmp_path_factory, data):
    work = tmp_path_factory.mktemp("case")
    root = linked_copy(mnist, work / "data")
    linked_copy(ckpt, work / "ckpt")
    target = data.draw(st.sampled_from(["test.jsonl", "image"]))
    if target == "image":
        path = root / f"mnist/img/{data.draw(st.integers(0, 3))}.png"
        what = damage_file(path, data.draw)
    else:
        path = root / "mnist/test.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if data.draw(st.booleans()):
            r = data.draw(st.integers(0, len(rows) - 1))
            rows[r] = mutate_json(rows[r], data.draw)
            path.unlink()
            path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
            what = f"test.jsonl row {r}: {rows[r]!r}"
        else:
            what = damage_file(path, data.draw)
    before = tree_hash(work, skip=work / "out")
    code = clean_outcome(_eval(work / "ckpt", root, work / "out"), what, ok_allowed=True)
    assert tree_hash(work, skip=work / "out") == before, what
    if code == 0:  # still a valid data set: evaluated, or skipped with its reason when nothing of it is left
        report = json.loads((work / "out/eval.json").read_text(encoding="utf-8"))
        assert "mnist" in report["results"]["elevater"]["s"] or "mnist" in report["skipped"]["elevater"], what


def test_the_undamaged_data_is_evaluated(ckpt, mnist, tmp_path):
    res = _eval(ckpt, mnist, tmp_path / "out")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out/eval.json").read_text(encoding="utf-8"))
    assert report["results"]["elevater"]["s"]["mnist"]["n"] == 4
