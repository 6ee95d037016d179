"""Using a compressed model: `from compress import load` on a run, a checkpoint and a bundle; `classify` and `embed`
through the CLI; one-language labels and templates; the [UNK] warnings; the commands' no-argument defaults; recipes
by name and DCCLIP_HOME. A tiny random student (the `tiny_bundle` fixture) through the real runtime."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress import load
from compress.errors import UserError
from compress.home import home
from mobile_export.bundle.labels import Label, UnknownTokenWarning, as_labels, parse_labels, read_labels
from mobile_export.bundle.parity import _render, reference_preprocess
from tests.helpers import invoke

LABELS = ["dog face", "红苹果", {"en": "car", "zh": "汽车"}, "apple", "狗脸", {"zh": "汽车"}, "dog"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real decoded images: emoji renders of odd sizes saved as PNG and JPEG (one with alpha)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (emoji, w, h) in enumerate((("🐶", 131, 97), ("🍎", 60, 90), ("🚗", 40, 31), ("😀", 64, 64))):
        path = folder / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(_render(emoji, w, h)).save(path)
        paths.append(path)
    rgba = Image.fromarray(_render("🍎", 50, 50)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    paths.append(folder / "alpha.png")
    return paths


@pytest.fixture(scope="module")
def run_home(tiny_bundle, tmp_path_factory) -> Path:
    """A home with one finished run made of the tiny checkpoint and bundle (what `run` leaves)."""
    root = tmp_path_factory.mktemp("home")
    run = root / "runs" / "tiny"
    shutil.copytree(tiny_bundle[0].parent / "ckpt", run / "student_fp32")
    shutil.copytree(tiny_bundle[0], run / "export")
    (run / "report.json").write_text("{}", encoding="utf-8")
    return root


def test_eager_and_pte_agree_on_real_images(tiny_bundle, photos):
    bundle, _ = tiny_bundle
    eager, pte = load(bundle.parent / "ckpt"), load(bundle)
    assert (eager.kind, pte.kind, pte.quant) == ("checkpoint", "bundle", "fp32")
    inputs = [photos[0], Image.open(photos[1]), np.asarray(Image.open(photos[2]).convert("RGB")), *photos[3:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownTokenWarning)
        a, b = eager.classify(inputs, LABELS, top_k=3), pte.classify(inputs, LABELS, top_k=3)
    assert [[p.label for p in row] for row in a] == [[p.label for p in row] for row in b]
    for ra, rb in zip(a, b):
        assert [p.cosine for p in ra] == pytest.approx([p.cosine for p in rb], abs=1e-4)
        assert 0 < ra[0].score <= 1 and ra[0].score >= ra[1].score >= ra[2].score
    # preprocessing is preprocess.json's definition, the same for every input kind and for both models
    x = pte.preprocess(photos[0])
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert torch.equal(x[0], reference_preprocess(np.asarray(Image.open(photos[0]).convert("RGB")), 32))
    assert torch.equal(eager.preprocess(Image.open(photos[0])), x)
    alpha = eager.preprocess(photos[4])  # alpha over white: half-transparent pixels are lighter than opaque ones
    assert alpha.mean() > eager.preprocess(np.asarray(Image.open(photos[4]).convert("RGB"))).mean()
    emb = pte.encode_image(photos)
    assert emb.shape == (5, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    text = eager.encode_text(["dog face", "狗脸"])
    assert text.shape == (2, 32) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    # names with lang: wrapped in the templates (the emoji world's), not as written
    assert not np.allclose(eager.encode_text(["dog face"], lang="en"), text[:1], atol=1e-4)
    assert np.allclose(eager.encode_text(["dog face"], lang="en", templates=["{}"]), text[:1], atol=1e-6)


def test_a_bundle_classifies_with_its_own_labels(tiny_bundle, photos):
    model = load(tiny_bundle[0])
    rows = model.classify(photos[:2], top_k=2)
    assert [len(r) for r in rows] == [2, 2]
    assert {p.label.en for r in rows for p in r} <= {"dog face", "red apple", "car"}
    with pytest.raises(UserError, match="pass labels"):
        load(tiny_bundle[0].parent / "ckpt").classify(photos[:1])


def test_the_api_takes_what_users_pass(tiny_bundle, photos, tmp_path):
    model = load(tiny_bundle[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownTokenWarning)
        assert [len(r) for r in model.classify(photos[:1], "dog face,car")] == [2]  # a comma list, as --labels takes
        assert model.classify(photos[:1], {"en": "car", "zh": "汽车"})[0][0].label == Label("car", "汽车")
        assert model.classify([], ["dog"]) == [] and model.encode_image([]).shape == (0, 32)
        assert model.encode_text([]).shape == (0, 32)
        with pytest.raises(UserError, match="no such label file"):
            model.classify(photos[:1], "labels.json")
        with pytest.raises(UserError, match="one {} where the label goes"):
            model.classify(photos[:1], ["dog"], templates=["a {} :}"])
        # a mapping's keys say the language: "{}" for zh only, en keeps the model's template
        a = model.encode_text(["狗脸"], lang="zh", templates={"zh": ["{}"]})
        assert np.allclose(a, model.encode_text(["狗脸"]), atol=1e-6)
    grey = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)  # 16-bit grey is scaled, not clipped to white
    Image.fromarray(grey).save(tmp_path / "g16.png")
    x = model.preprocess(tmp_path / "g16.png")
    assert 0.3 < float(x.mean()) < 0.7


def test_labels_in_one_language_and_unknown_characters_warn(tiny_bundle):
    model = load(tiny_bundle[0])
    with pytest.warns(UnknownTokenWarning, match=r"'鑫'.*\[UNK\]"):
        labels, rows = model.label_embeddings(["鑫", "dog face"])
    assert labels == [Label(zh="鑫"), Label(en="dog face")] and rows.shape == (2, 32)
    # a zh-only label's en row is its zh row (its own name in its own templates)
    _, en = model.label_embeddings([{"zh": "狗脸"}], lang="en")
    _, zh = model.label_embeddings([{"zh": "狗脸"}], lang="zh")
    assert np.allclose(en, zh, atol=1e-6)
    assert as_labels(["𰻞", "cat"])[0] == Label(zh="𰻞")  # CJK extension G is Chinese too
    assert parse_labels("dog, 狗 ,cat") == [Label(en="dog"), Label(zh="狗"), Label(en="cat")]


def test_label_files_may_hold_one_language(tmp_path):
    (tmp_path / "a.tsv").write_text("zh\n狗\n猫\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("dog\n\n猫\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"en": "dog"}\n{"zh": "猫", "id": 3}\n', encoding="utf-8")
    assert read_labels(tmp_path / "a.tsv") == [Label(zh="狗"), Label(zh="猫")]
    assert read_labels(tmp_path / "b.txt") == [Label(en="dog"), Label(zh="猫")]
    assert read_labels(tmp_path / "c.jsonl") == [Label(en="dog"), Label(zh="猫", id="3")]
    (tmp_path / "d.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match="has no en or zh name"):
        read_labels(tmp_path / "d.jsonl")


def test_classify_and_embed_through_the_cli(tiny_bundle, photos, tmp_path):
    bundle, _ = tiny_bundle
    res = invoke(["classify", str(bundle), str(photos[0].parent), "--labels", "dog face,红苹果,car,鑫", "--top-k", "2",
                  "--json", "--template", "a photo of a {}."])
    assert res.exit_code == 0, (res.output, res.exception)
    rows = json.loads(res.stdout)
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.jpg", "2.png", "3.jpg", "alpha.png"]
    assert all(len(r["top"]) == 2 and r["top"][0]["score"] >= r["top"][1]["score"] for r in rows)
    assert "warning: label '鑫' (zh)" in res.stderr and "[UNK]" in res.stderr
    res = invoke(["classify", str(bundle.parent / "ckpt"), str(photos[0]), "--labels", "dog,cat"])
    assert res.exit_code == 0 and res.stdout.startswith(f"{photos[0]}: ") and "%" in res.stdout, res.output

    out = tmp_path / "e.npy"
    res = invoke(["embed", str(bundle), "--images", str(photos[0]), "--images", str(photos[1]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    emb, index = np.load(out), json.loads(out.with_suffix(".json").read_text())
    assert emb.shape == (2, 32) and emb.dtype == np.float32 and index["items"] == [str(photos[0]), str(photos[1])]
    assert np.allclose(emb, load(bundle).encode_image(photos[:2]), atol=1e-6)
    texts = tmp_path / "t.txt"
    texts.write_text("狗脸\ndog face\n", encoding="utf-8")
    res = invoke(["embed", str(bundle), "--texts", str(texts), "--texts", "car", "--out", str(out)])  # ours: rewritten
    assert res.exit_code == 0 and np.load(out).shape == (3, 32), res.output
    mine = tmp_path / "mine.npy"
    mine.write_bytes(b"user data")
    for args, message in (([], "embed did not write it"), (["--images", str(photos[0])], "not both")):
        res = invoke(["embed", str(bundle), "--texts", "x", *args, "--out", str(mine)])
        assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    assert mine.read_bytes() == b"user data"


def test_commands_default_to_the_newest_finished_run(run_home, monkeypatch, photos):
    monkeypatch.setenv("DCCLIP_HOME", str(run_home))
    assert home() == run_home
    res = invoke(["verify"])
    assert res.exit_code == 0 and "newest finished run's bundle" in res.output and "ok:" in res.output, res.output
    assert load().kind == "run"
    res = invoke(["export", "--quant", "fp32", "--labels", "dog,狗", "--template", "a photo of a {}."])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "the newest finished run" in res.output
    doc = json.loads((run_home / "runs" / "tiny" / "export-xnnpack" / "labels.json").read_text())
    assert doc["labels"] == [{"en": "dog"}, {"zh": "狗"}]
    assert doc["templates"] == {"en": ["a photo of a {}."], "zh": ["{}的表情符号"]}
    assert invoke(["verify", str(run_home / "runs" / "tiny" / "export-xnnpack")]).exit_code == 0
    monkeypatch.setenv("DCCLIP_HOME", str(run_home / "empty"))
    res = invoke(["export"])
    assert res.exit_code == 2 and "no finished run under" in res.stderr and "DCCLIP_HOME" in res.stderr


def test_recipes_resolve_by_name_anywhere_and_caches_follow_the_home(tmp_path, monkeypatch):
    from compress.recipe import load_recipe
    from compress.search.latency import LatencyTable
    from compress.teachers.reference import reference_recipe_for, reference_teacher_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCCLIP_HOME", str(tmp_path / "home"))
    recipe = load_recipe("mobilevit_int8")
    assert recipe.name == "mobilevit_int8" and load_recipe("recipes/emoji_teacher.yaml").name == "emoji_teacher"
    assert reference_teacher_folder(reference_recipe_for(recipe)).parent == tmp_path / "home" / ".cache" / "teachers"
    assert LatencyTable().path == tmp_path / "home" / ".cache" / "latency" / "table.jsonl"
    (tmp_path / "recipes").mkdir()  # a user's own file of the same name wins
    (tmp_path / "recipes" / "mobilevit_int8.yaml").write_text("name: mine\n", encoding="utf-8")
    assert load_recipe("recipes/mobilevit_int8.yaml").name == "mine"
    with pytest.raises(UserError, match="shipped recipe: .*mobilevit_int8"):
        load_recipe("no_such_recipe")
    (tmp_path / "vit_int8").mkdir()  # a folder of that name (a run's) does not hide the shipped recipe
    assert load_recipe("vit_int8").name == load_recipe("vit_int8.yml").name == "vit_int8"
