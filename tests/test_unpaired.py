"""Unpaired stage-1 data (distill.unpaired_images, distill.text_only): image-only rows train the image tower only,
text-only rows the text tower only, a batch may mix them with pairs (masks), and stage 2 keeps using pairs only."""
import json

import pytest
import torch
from PIL import Image

from compress.data.emoji import emoji_classes
from compress.data.pairs import stage1_pairs
from compress.data.unpaired import load_image_only, load_text_only
from compress.errors import UserError
from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
from compress.pipeline.data import load_run_data, with_unpaired
from compress.pipeline.student import build_student
from compress.recipe import parse_recipe
from compress.teachers.reference import ReferenceTeacher
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer
from compress.train.data import KeyCollate
from compress.train.distill import DistillStage, OnlineTargets

STUDENTS = {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 300},
            "embed_dim": 32}


def _recipe(emoji_cache, distill=None, **data):
    return parse_recipe({"name": "u", "students": STUDENTS, "distill": distill or {},
                         "data": {"limit": 40, "image_size": 32, "train_renders": 2, "cache_dir": str(emoji_cache),
                                  "unseen_fraction": 0.3, "split_seed": 7, "student_fraction": 0.3, **data}})


@pytest.fixture(scope="module")
def world(emoji_cache, tmp_path_factory):
    recipe = _recipe(emoji_cache, {"unpaired_images": "world", "text_only": "world", "epochs": 1, "batch_size": 8})
    data = with_unpaired(recipe, load_run_data(recipe.data, recipe.seed))
    stage1 = data.stage1
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(stage1), 300), 16)
    folder = tmp_path_factory.mktemp("unpaired") / "teacher"
    torch.manual_seed(1)
    save_checkpoint(DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 24, 32, 16, tok.vocab_size)), tok, folder)
    return recipe, data, stage1, tok, ReferenceTeacher.from_folder(folder)


def _rows(stage1, data):
    """Sample indices of the pairs, the image-only rows and the text-only rows of the stage-1 set."""
    n_pairs, n_img = len(data.train), len(data.unpaired_images)
    return (list(range(n_pairs)), list(range(n_pairs, n_pairs + n_img)), list(range(n_pairs + n_img, len(stage1))))


def _stage(world):
    recipe, _, _, tok, teacher = world
    return DistillStage(build_student(recipe, tok), OnlineTargets(teacher), recipe.distill, seed=0)


def _batch(world, indices):
    _, _, stage1, tok, _ = world
    return KeyCollate(stage1, 0, tok)([(i, 3) for i in indices])


def _grads(stage, batch):
    stage.zero_grad(set_to_none=True)
    loss, parts = stage(batch)
    loss.backward()
    norm = lambda mod: sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)  # noqa: E731
    return norm(stage.image), norm(stage.text), parts


def test_the_world_s_unpaired_rows(world):
    _, data, stage1, _, _ = world
    k = data.world.teacher_only
    names = {c.index: c for c in emoji_classes()[:40]}
    assert data.unpaired_images.num_groups == len(k) and set(data.unpaired_images.en) == {None}
    assert set(data.text_only.zh) == {names[i].zh for i in k} and data.text_only.num_images == 0
    assert len(stage1) == len(data.train) + len(data.unpaired_images) + len(data.text_only)
    assert stage1.num_images == len(data.train) + len(data.unpaired_images)
    assert stage1.num_groups == data.train.num_groups + 2 * len(k)
    pairs, img, txt = _rows(stage1, data)
    batch = _batch(world, pairs[:2] + img[:2] + txt[:2])
    assert batch.has_image.tolist() == [True] * 4 + [False] * 2
    assert batch.has_en.tolist() == [True, True, False, False, True, True]
    assert float(batch.pixels[4:].abs().sum()) == 0.0


def test_image_only_rows_train_only_the_image_tower(world):
    _, data, stage1, _, _ = world
    stage = _stage(world)
    image, text, parts = _grads(stage, _batch(world, _rows(stage1, data)[1][:4]))
    assert image > 0 and text == 0 and "text_embed" not in parts and "maps" in parts


def test_text_only_rows_train_only_the_text_tower(world):
    _, data, stage1, _, _ = world
    stage = _stage(world)
    image, text, parts = _grads(stage, _batch(world, _rows(stage1, data)[2][:4]))
    assert text > 0 and image == 0 and "maps" not in parts and "image_embed" not in parts and "text_embed" in parts


def test_a_mixed_batch_is_the_sum_of_its_masked_parts(world):
    _, data, stage1, _, _ = world
    pairs, img, txt = _rows(stage1, data)
    batch = _batch(world, pairs[:3] + img[:3] + txt[:3])
    stage = _stage(world)
    loss, parts = stage(batch)
    images = batch.rows(batch.has_image)  # the image part: rows with an image, captions dropped
    images.has_en, images.has_zh = torch.zeros_like(images.has_en), torch.zeros_like(images.has_zh)
    texts = batch.rows(batch.has_en | batch.has_zh)  # the text part: captioned rows, images dropped
    texts.has_image = torch.zeros_like(texts.has_image)
    l_img, p_img = stage(images)
    l_txt, p_txt = stage(texts)
    assert set(p_img) == {"maps", "image_embed"} and set(p_txt) == {"text_embed", "text_hidden"}
    assert {k: float(v) for k, v in parts.items()} == {k: float(v) for k, v in {**p_img, **p_txt}.items()}
    assert torch.allclose(loss, l_img + l_txt, rtol=1e-6, atol=0)


def test_u_never_reaches_the_tokenizer_and_k_text_does(world):
    _, data, stage1, _, _ = world
    names = {c.index: c for c in emoji_classes()[:40]}
    corpus = "\n".join(tokenizer_corpus(stage1))
    for i in data.world.unseen:
        assert names[i].zh not in corpus and f" {names[i].en}" not in corpus
    for i in data.world.teacher_only:  # distill.text_only "world": K's names are the text tower's, in both languages
        assert names[i].zh in corpus and f" {names[i].en}" in corpus


def test_world_values_need_the_world_and_no_cache(emoji_cache):
    for key in ("unpaired_images", "text_only"):
        with pytest.raises(UserError, match=f"distill.{key}: 'world'.*data.split_seed"):
            _recipe(emoji_cache, {key: "world"}, split_seed=None)
        with pytest.raises(UserError, match=f"distill.{key}: 'world'"):
            _recipe(emoji_cache, {key: "world"}, pairs="teacher")
        with pytest.raises(UserError, match=f"distill.{key}: not yet with teacher.cache"):
            parse_recipe({"name": "c", "teacher": {"cache": "x"}, "distill": {key: "some.jsonl"}})


def test_defaults_keep_the_fingerprint_and_the_training_set(emoji_cache):
    base = _recipe(emoji_cache)
    assert base.fingerprint() == _recipe(emoji_cache, {"unpaired_images": None, "text_only": None}).fingerprint()
    assert base.fingerprint() != _recipe(emoji_cache, {"text_only": "world"}).fingerprint()
    data = with_unpaired(base, load_run_data(base.data, base.seed))
    assert data.stage1 is data.train and stage1_pairs(data.train) is data.train


def test_stage2_sees_pairs_only(world, tmp_path):
    """A real train_fp32: stage 1 steps over pairs + K's image-only + K's text-only groups, stage 2 over pairs only
    (one epoch each at batch 8: the step counts tell which set each stage drew from)."""
    import compress.pipeline.student as student
    from compress.pipeline.state import RunState

    recipe, _, _, _, teacher = world
    recipe = recipe.model_copy(update={"align": recipe.align.model_copy(update={"epochs": 1, "batch_size": 8}),
                                       "distill": recipe.distill.model_copy(update={"epochs": 1, "batch_size": 8})})
    data = load_run_data(recipe.data, recipe.seed)
    state = RunState(recipe, tmp_path, resume=False, distributed=False)
    student.train_fp32(state, data, teacher)
    joined = data.train.num_groups + 2 * len(data.world.teacher_only)
    assert with_unpaired(recipe, data).stage1.num_groups == joined
    assert state.history["distill"]["steps"] == joined // 8
    assert state.history["align"]["steps"] == data.train.num_groups // 8


def test_unpaired_files(tmp_path):
    Image.new("RGB", (10, 8), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "img.jsonl").write_text('{"image": "a.png"}\n{"image": "../x.png"}\nnot json\n{"image": "a.png", "en": "x"}\n')
    images = load_image_only(tmp_path / "img.jsonl", 16)
    assert len(images) == 2 and images.images.shape == (2, 3, 16, 16) and images.en == [None, None]
    (tmp_path / "t.txt").write_text("a red apple\n\n红苹果\n", encoding="utf-8")
    text = load_text_only(tmp_path / "t.txt", False, (3, 16, 16))
    assert (text.en, text.zh, text.num_images, len(text)) == (["a red apple", None], [None, "红苹果"], 0, 2)
    (tmp_path / "t.jsonl").write_text(json.dumps({"en": ["a", "b"], "zh": "狗"}) + "\n{}\n", encoding="utf-8")
    text = load_text_only(tmp_path / "t.jsonl", False, (3, 16, 16))
    assert (text.en, text.zh, text.more) == (["a"], ["狗"], {"en": {0: ("a", "b")}})
    with pytest.raises(UserError, match="2 of 2 shards not found"):  # shards are read (tests/test_streaming.py)
        load_image_only(tmp_path / "s-{000..001}.tar", 16)
    both = stage1_pairs(images.__class__(images.images, images.groups, ["p", "q"], ["甲", "乙"], templated=False),
                        images, text)
    assert (len(both), both.num_images, both.en, both.more) == (5, 4, ["p", "q", None, None, "a"],
                                                                 {"en": {4: ("a", "b")}})
    assert both.has_image(torch.tensor([0, 3, 4])).tolist() == [True, True, False]


def test_stage2_retain_anchors_every_row_and_contrasts_pairs_only(world):
    """align.retain: stage 2 over stage 1's rows; text-only rows reach only the anchor (no image gradient), and with
    every row an image-caption pair the loss is plain stage 2's plus the anchor."""
    import copy

    from compress.train.align import AlignStage

    recipe, data, stage1, tok, _ = world
    model = build_student(recipe, tok).eval()  # no dropout: the towers are exactly their anchor
    ref = tuple(copy.deepcopy(t).eval().requires_grad_(False) for t in (model.image, model.text))
    cfg = recipe.align.model_copy(update={"retain": 1.0})
    stage = AlignStage(model.image, model.text, model.logit_scale, cfg, reference=ref, reference_weight=1.0)
    pairs, img, txt = _rows(stage1, data)
    image, at_anchor, parts = _grads(stage, _batch(world, txt[:4]))
    assert image == 0 and "clip_en" not in parts and float(parts["self_distill"]) < 1e-5  # at the anchor
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.text.parameters():  # leave the anchor
            p.add_(0.05 * torch.randn_like(p))
    image, text, parts = _grads(stage, _batch(world, txt[:4]))
    assert image == 0 and text > 100 * at_anchor and "clip_en" not in parts and float(parts["self_distill"]) > 0
    mixed = _batch(world, pairs[:4] + img[:2] + txt[:2])
    loss, parts = stage(mixed)
    plain = AlignStage(model.image, model.text, model.logit_scale, recipe.align)
    only_pairs = mixed.rows(mixed.has_image & (mixed.has_en | mixed.has_zh))
    only_pairs.has_image = None
    p_loss, p_parts = plain(only_pairs)
    assert float(parts["clip_en"]) == pytest.approx(float(p_parts["clip_en"]), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(p_loss.detach()) + float(parts["self_distill"]), rel=1e-5)


def test_pseudo_labels_caption_k_images_with_the_teacher_s_guess(world):
    from compress.data.pairs import labelled_pairs
    from compress.pipeline.data import pseudo_labelled

    recipe, data, _, _, teacher = world
    names = data.text_only
    pairs = labelled_pairs(data.train, data.unpaired_images.images[:3], [2, 0, 2], names)
    assert pairs.num_groups == data.train.num_groups + 2 and len(pairs) == len(data.train) + 3
    assert pairs.en[-2:] == [names.en[0], names.en[2]] and pairs.zh[-1] == names.zh[2]
    assert pairs.groups[-3:].tolist() == [pairs.num_groups - 1, pairs.num_groups - 2, pairs.num_groups - 1]
    recipe = recipe.model_copy(update={"align": recipe.align.model_copy(update={"pseudo_label": True})})
    pairs, info = pseudo_labelled(recipe, with_unpaired(recipe, load_run_data(recipe.data, recipe.seed)), teacher)
    assert len(pairs) == len(data.train) + len(data.unpaired_images) and pairs.num_images == len(pairs)
    assert set(pairs.zh[data.train.num_groups:]) <= set(names.zh) and 0.0 <= info["agree_with_class"] <= 1.0
    assert info["names_used"] == pairs.num_groups - data.train.num_groups
    with pytest.raises(UserError, match="align.pseudo_label: the teacher labels"):
        parse_recipe({"name": "p", "align": {"pseudo_label": True}, "distill": {"text_only": "some.txt"}})


def test_retain_needs_stage_1_and_excludes_pseudo_labels():
    with pytest.raises(UserError, match="align.retain: it anchors stage 2 to the stage-1 student"):
        parse_recipe({"name": "r", "align": {"retain": 1.0}, "distill": {"enabled": False}})
    with pytest.raises(UserError, match="align.retain with align.pseudo_label"):
        parse_recipe({"name": "r", "align": {"retain": 1.0, "pseudo_label": True},
                      "distill": {"unpaired_images": "a.jsonl", "text_only": "b.txt"}})
