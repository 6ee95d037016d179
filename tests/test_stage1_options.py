"""Stage 1's options (issue 16, item 3): distill.embed_adapter shared | per_tower | none, teacher.text_layers (several
text taps, both teacher kinds, online and through the teacher-feature cache) and distill.cross_lingual."""
import pytest
import torch

from compress.errors import UserError
from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
from compress.pipeline.data import load_run_data
from compress.pipeline.student import build_student
from compress.recipe import DistillConfig, parse_recipe
from compress.teachers.base import resolve_text_layers
from compress.teachers.hf import HFTeacher
from compress.teachers.reference import ReferenceTeacher
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer
from compress.train import loop
from compress.train.data import EpochPlan, KeyCollate, trim_padding
from compress.train.distill import DistillStage, OnlineTargets, cross_lingual_rows, present_captions, student_text_taps
from tests import hf_fixtures as fx

DATA = {"limit": 24, "image_size": 32, "train_renders": 2}
STUDENTS = {"image": {"arch": "mobilevit_xxs"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 300},
            "embed_dim": 32}


@pytest.fixture(scope="module")
def tiny(emoji_cache, tmp_path_factory):
    recipe = parse_recipe({"name": "tiny", "data": {**DATA, "cache_dir": str(emoji_cache)}, "students": STUDENTS})
    data = load_run_data(recipe.data, recipe.seed)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    root = tmp_path_factory.mktemp("stage1-options")
    torch.manual_seed(1)
    save_checkpoint(DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 24, 32, 16, tok.vocab_size)), tok,
                    root / "teacher")
    return {"recipe": recipe, "data": data, "tok": tok, "root": root, "reference": root / "teacher",
            "altclip": fx.make_tiny_altclip(root / "altclip"), "clip": fx.make_tiny_clip(root / "clip")}


def _batch(env, size=8):
    pairs = env["data"].train
    return KeyCollate(pairs, 0, env["tok"])(EpochPlan(pairs, size, 0).plan(0)[0])


def _stage(env, targets, **cfg):
    return DistillStage(build_student(env["recipe"], env["tok"]), targets, DistillConfig(**cfg), seed=0)


# ------------------------------------------------------------------------------------------------ embed_adapter
@pytest.mark.parametrize("mode", ["shared", "per_tower", "none"])
def test_each_embed_adapter_mode_trains_with_its_own_adapters(tiny, mode):
    targets = OnlineTargets(ReferenceTeacher.from_folder(tiny["reference"]))
    cfg = DistillConfig(epochs=5, batch_size=16, lr=3e-3, embed_adapter=mode)
    stage = DistillStage(build_student(tiny["recipe"], tiny["tok"]), targets, cfg)
    names = {n.split(".")[0] for n, _ in stage.adapters.named_parameters()}
    assert names == {"shared": {"maps", "embed", "hidden"}, "per_tower": {"maps", "image_embed", "text_embed", "hidden"},
                     "none": {"maps", "hidden"}}[mode]
    if mode == "per_tower":  # two adapters, each from the student's embedding onto the teacher's
        image, text = stage.adapters.embed_for("image"), stage.adapters.embed_for("text")
        assert image is not text and image.weight.shape == text.weight.shape == (24, 32)
    hist = loop.train(stage, tiny["data"].train, tiny["tok"], cfg, loop.LoopContext())
    assert hist.losses[-1] < 0.8 * hist.losses[0], hist.losses
    embed_parts = {"image_embed", "text_embed"}
    assert embed_parts <= set(hist.parts[0]) if mode != "none" else not embed_parts & set(hist.parts[0])
    assert {"maps", "text_hidden"} <= set(hist.parts[0])


def test_no_embedding_term_leaves_the_embedding_projections_without_gradient(tiny):
    targets = OnlineTargets(ReferenceTeacher.from_folder(tiny["reference"]))
    batch = _batch(tiny)
    grads = {}
    for mode in ("shared", "none"):
        stage = _stage(tiny, targets, embed_adapter=mode)
        loss, parts = stage(batch)
        loss.backward()
        grads[mode] = {"image": stage.image.proj.weight.grad, "text": stage.text.proj.weight.grad}
        assert ("image_embed" in parts) == ("text_embed" in parts) == (mode == "shared")
        # what is left is exactly maps + hidden: no embedding term hides in the total
        expected = parts["maps"] + 0.5 * parts["text_hidden"] + (parts["image_embed"] + parts["text_embed"]
                                                                 if mode == "shared" else 0)
        torch.testing.assert_close(loss.detach(), expected)
    assert grads["shared"]["image"].abs().sum() > 0 and grads["shared"]["text"].abs().sum() > 0
    for tower in ("image", "text"):  # both projections sit after every tap: only an embedding term reaches them
        g = grads["none"][tower]
        assert g is None or not g.any(), tower


def test_none_with_nothing_else_to_distil_is_refused(tiny):
    teacher = HFTeacher.from_pretrained(str(tiny["altclip"]), map_layers=[], text_layers=[])
    with pytest.raises(UserError, match="embed_adapter 'none' leaves stage 1 nothing to distil"):
        _stage(tiny, OnlineTargets(teacher), embed_adapter="none")


# ------------------------------------------------------------------------------------------------ text_layers
def test_student_taps_are_evenly_spaced_and_end_with_the_last_block():
    assert student_text_taps(2, 2) == [0, 1] and student_text_taps(2, 1) == [1] and student_text_taps(2, 0) == []
    assert student_text_taps(4, 2) == [1, 3] and student_text_taps(6, 3) == [1, 3, 5] and student_text_taps(12, 4) == [2, 5, 8, 11]
    with pytest.raises(UserError, match="3 teacher taps but the student's text tower has 2 block"):
        student_text_taps(2, 3)
    assert resolve_text_layers(None, 12) is None and resolve_text_layers([], 12) == []
    assert resolve_text_layers([-1, 3], 12) == [3, 11]
    for bad, msg in (([12], "12 is out of range for a 12-block text tower"), ([1, -11], "same block"),
                     ([True], "not a block index")):
        with pytest.raises(UserError, match=msg):
            resolve_text_layers(bad, 12)


@pytest.mark.parametrize("kind", ["reference", "altclip"])
def test_two_text_layers_give_two_text_distillation_terms(tiny, kind):
    if kind == "reference":
        teacher = ReferenceTeacher.from_folder(tiny["reference"], text_layers=[0, -1])
        default = ReferenceTeacher.from_folder(tiny["reference"])
    else:
        teacher = HFTeacher.from_pretrained(str(tiny["altclip"]), text_layers=[0, -1])
        default = HFTeacher.from_pretrained(str(tiny["altclip"]))
    assert teacher.text_layers == [0, 1] and default.text_layers is None
    feats = teacher.encode_text(["dog face", "狗脸", "red apple"])
    assert feats.hidden is None and len(feats.layers) == 2 and feats.layers[0].shape[0] == 3
    assert not torch.allclose(feats.layers[0], feats.layers[1])
    torch.testing.assert_close(feats.embedding, default.encode_text(["dog face", "狗脸", "red apple"]).embedding)
    targets = OnlineTargets(teacher)
    assert targets.shapes.hidden_dim is None and len(targets.shapes.text_layer_dims) == 2
    stage = _stage(tiny, targets, embed_adapter="per_tower")
    assert stage.text_blocks == [0, 1] and len(stage.adapters.text_taps) == 2 and stage.adapters.hidden is None
    loss, parts = stage(_batch(tiny))
    taps = sorted(k for k in parts if k.startswith("text_hidden"))
    assert taps == ["text_hidden_0", "text_hidden_1"] and all(parts[k] > 0 for k in taps)
    loss.backward()
    assert all(a.weight.grad.abs().sum() > 0 for a in stage.adapters.text_taps)
    assert stage.text.blocks[0].fc2.weight.grad.abs().sum() > 0
    if kind == "reference":  # the 2-block student has 2 taps: one per block; a third is refused
        three = ReferenceTeacher.from_folder(tiny["reference"], text_layers=[0, 1])
        three.text_layers = [0, 1, 1]
        with pytest.raises(UserError, match="3 teacher taps"):
            _stage(tiny, OnlineTargets(three))


def test_text_layers_recipe_keys_and_fingerprint(tiny):
    base = {"name": "x", "data": DATA, "students": STUDENTS}
    plain = parse_recipe(base)
    same = parse_recipe({**base, "distill": {"embed_adapter": "shared", "cross_lingual": False}})
    assert plain.fingerprint() == same.fingerprint()  # recipes from before the keys keep their hash
    for change in ({"distill": {"embed_adapter": "per_tower"}}, {"distill": {"embed_adapter": "none"}},
                   {"distill": {"cross_lingual": True}}, {"teacher": {"text_layers": [0, -1]}},
                   {"teacher": {"text_layers": []}}):
        assert parse_recipe({**base, **change}).fingerprint() != plain.fingerprint(), change
    with pytest.raises(UserError, match="set either text_layer .* or text_layers"):
        parse_recipe({**base, "teacher": {"text_layer": -1, "text_layers": [0, -1]}})
    with pytest.raises(UserError, match="distill.cross_lingual: .* 'none'"):
        parse_recipe({**base, "distill": {"cross_lingual": True, "embed_adapter": "none"}})
    with pytest.raises(UserError, match="embed_adapter"):
        parse_recipe({**base, "distill": {"embed_adapter": "both"}})


@pytest.mark.parametrize("kind", ["reference", "altclip"])
def test_text_layers_through_the_teacher_cache(tiny, kind):
    """The cache stores every text tap (its fingerprint names them), and stage 1 trains from it as from the teacher."""
    from compress.train.feature_cache import CachedTargets, cache_fingerprint
    from compress.train.feature_cache.fingerprint import teacher_identity
    from compress.train.feature_cache.write import write_cache

    recipe, pairs = tiny["recipe"], tiny["data"].train
    if kind == "reference":  # a reference teacher from a folder: its identity is given, the taps come from the recipe
        teacher = ReferenceTeacher.from_folder(tiny["reference"], text_layers=[0, -1])
        section = {"kind": "reference", "text_layers": [0, -1]}
        identity = {"kind": "reference", "checkpoint": "test", "text_layers": [0, 1]}
    else:
        section = {"kind": "hf", "spec": str(tiny["altclip"]), "text_layers": [0, -1]}
        teacher, identity = (lambda: HFTeacher.from_pretrained(str(tiny["altclip"]), text_layers=[0, -1])), None
    folder = tiny["root"] / f"cache-{kind}"
    r = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={**section, "cache": str(folder),
                                                                                "cache_views": 1})})
    # the recipe's teacher names the resolved taps (the reference teacher's text_small has 2 blocks, so -1 is 1)
    assert teacher_identity(r)["text_layers"] == [0, 1]
    plain = r.model_copy(update={"teacher": r.teacher.model_copy(update={"text_layers": None})})
    assert "text_layers" not in teacher_identity(plain)  # caches from before the key keep their fingerprint
    m = write_cache(r, teacher, pairs, folder, views=1, identity=identity)
    assert m["shapes"]["text_layer_dims"] == [fx.HIDDEN if kind == "altclip" else 96] * 2 and m["shapes"]["hidden_dim"] is None
    assert {"en_layer_0", "en_layer_1", "zh_layer_0", "zh_layer_1"} <= set(m["tensors"])
    cached = CachedTargets(folder, cache_fingerprint(r, pairs, identity=identity))
    online = OnlineTargets(teacher() if callable(teacher) and not hasattr(teacher, "encode_text") else teacher)
    assert vars(cached.shapes) == vars(online.shapes)
    batch = KeyCollate(pairs, r.seed, tiny["tok"])(EpochPlan(pairs, 8, r.seed, views=1).plan(0)[0])
    a, b = cached.text(batch), online.text(batch)
    assert a.hidden is None and len(a.layers) == 2
    for x, y in zip(a.layers, b.layers):
        torch.testing.assert_close(x, y, rtol=2e-3, atol=2e-3 * float(y.abs().max()))
    _, parts = _stage(tiny, cached)(batch)
    assert {"text_hidden_0", "text_hidden_1"} <= set(parts)


# ------------------------------------------------------------------------------------------------ cross_lingual
def test_cross_lingual_rows_point_chinese_captions_at_their_english_caption():
    has_en = torch.tensor([True, False, True, True])
    has_zh = torch.tensor([True, True, False, True])
    # present captions: en of samples 0, 2, 3 (rows 0-2), then zh of samples 0, 1, 3 (rows 3-5)
    assert cross_lingual_rows(has_en, has_zh).tolist() == [0, 1, 2, 0, -1, 2]


def test_cross_lingual_targets_are_the_teachers_english_embedding(tiny):
    teacher = HFTeacher.from_pretrained(str(tiny["clip"]))  # English-only CLIP
    targets = OnlineTargets(teacher)
    batch = _batch(tiny)
    batch.en[1], batch.has_en[1] = None, False  # a sample with no English caption: its Chinese one has no target
    batch.en_ids[1] = 0
    stage = _stage(tiny, targets, cross_lingual=True)
    t_txt = targets.text(batch)
    keep, target = stage.text_embedding_targets(batch, t_txt)
    n_en, n_zh = int(batch.has_en.sum()), int(batch.has_zh.sum())
    assert keep.tolist() == [True] * n_en + [bool(batch.has_en[i]) for i in range(len(batch)) if batch.has_zh[i]]
    assert target.shape[0] == n_en + n_zh - 1
    torch.testing.assert_close(target[:n_en], t_txt.embedding[:n_en], rtol=0, atol=0)
    zh_samples = [i for i in range(len(batch)) if batch.has_zh[i] and batch.has_en[i]]
    english = teacher.encode_text([batch.en[i] for i in zh_samples]).embedding
    torch.testing.assert_close(target[n_en:], english, rtol=1e-4, atol=1e-5)  # the English caption of that group
    own_zh = t_txt.embedding[n_en:][keep[n_en:]]
    assert not torch.allclose(target[n_en:], own_zh)  # not the teacher's embedding of the Chinese caption
    # the hidden-state term: the English rows only, against the teacher's own states of them
    assert present_captions(batch)[:n_en] == [c for c in batch.en if c is not None]
    _, parts = stage(batch)
    with torch.no_grad():
        _, s_hidden = stage.text.forward_features(trim_padding(torch.cat([batch.en_ids[batch.has_en],
                                                                          batch.zh_ids[batch.has_zh]])))
        expected = stage.crit(stage.adapters.hidden(s_hidden[:n_en]), t_txt.hidden[:n_en])
    torch.testing.assert_close(parts["text_hidden"], expected)
    assert "text_embed" in parts


def test_cross_lingual_trains(tiny):
    targets = OnlineTargets(HFTeacher.from_pretrained(str(tiny["clip"])))
    cfg = DistillConfig(epochs=5, batch_size=16, lr=3e-3, cross_lingual=True, embed_adapter="per_tower")
    stage = DistillStage(build_student(tiny["recipe"], tiny["tok"]), targets, cfg)
    hist = loop.train(stage, tiny["data"].train, tiny["tok"], cfg, loop.LoopContext())
    assert hist.losses[-1] < 0.8 * hist.losses[0], hist.losses
