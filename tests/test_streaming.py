"""Corpora on disk (issue 17): webdataset shards and manifests are indexed once and their images read and decoded
when a batch asks for them, in DataLoader workers; batches, resume and multi-process splits stay exact."""
from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from PIL import Image

from compress.data.images import decode_image
from compress.data.store import LazyImages
from compress.data.webdataset import load_shards, write_shards
from compress.pipeline.data import load_run_data
from compress.pipeline.student import build_student
from compress.recipe import AlignConfig, TrainingConfig, parse_recipe
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer
from compress.train import loop
from compress.train.align import AlignStage
from compress.train.data import EpochPlan
from tests.helpers import home_at

N = 40


def _corpus(root: Path, n: int = N, seed: int = 0) -> list[dict]:
    """n photos of varied aspect with en / zh captions, as manifest rows (images under root)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        w, h = rng.randint(20, 60), rng.randint(20, 60)
        img = Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        img.paste((rng.randrange(256), 30, 200), (2, 2, w // 2, h // 3))
        name = f"p{i}.jpg" if i % 3 else f"p{i}.png"
        img.save(root / name)
        rows.append({"image": name, "en": f"a photo of thing {i}", "zh": f"第{i}件东西的照片"})
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, emoji_cache):
    root = tmp_path_factory.mktemp("streaming")
    rows = _corpus(root / "images")
    written = write_shards(rows, root / "shards", samples_per_shard=7, root=root / "images")
    recipe = parse_recipe({
        "name": "stream", "data": {"kind": "webdataset", "shards": written.pattern, "image_size": 32, "limit": 8,
                                   "train_renders": 1, "cache_dir": str(emoji_cache), "workers": 2},
        "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16,
                                                                 "vocab_size": 300}, "embed_dim": 32},
    })
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with home_at(root):  # the shard index cache (.cache/shard-index) goes under the test's folder
            data = load_run_data(recipe.data, recipe.seed)
    finally:
        os.chdir(cwd)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    return {"root": root, "rows": rows, "written": written, "recipe": recipe, "data": data, "tok": tok}


def test_the_corpus_stays_on_disk_and_decodes_as_the_eager_reader(corpus):
    images = corpus["data"].train.images
    assert isinstance(images, LazyImages) and images.shape == (N, 3, 32, 32) and len(corpus["written"].paths) == 6
    got = images[torch.arange(N)]
    for i, row in enumerate(corpus["rows"]):  # the same bytes, the same decode
        want = decode_image(io.BytesIO((corpus["root"] / "images" / row["image"]).read_bytes()), 32)
        assert np.array_equal(got[i].numpy(), want), i
    assert corpus["data"].train.en[5] == "a photo of thing 5" and corpus["data"].train.zh[5] == "第5件东西的照片"


def test_each_shard_is_indexed_once_and_again_when_it_changes(corpus, tmp_path):
    written = write_shards(corpus["rows"][:10], tmp_path / "shards", samples_per_shard=4, root=corpus["root"] / "images")
    index_dir = tmp_path / "index"
    first = load_shards(written.pattern, 32, index_dir)
    files = sorted(index_dir.iterdir())
    assert len(files) == 3 and first.used == 10
    stamps = [f.stat().st_mtime_ns for f in files]
    again = load_shards(written.pattern, 32, index_dir)  # read from the index: nothing rebuilt
    assert [f.stat().st_mtime_ns for f in sorted(index_dir.iterdir())] == stamps and again.en == first.en
    rewritten = write_shards(corpus["rows"][:12], tmp_path / "shards", samples_per_shard=4,
                             root=corpus["root"] / "images", overwrite=True)  # shard 2 now holds 4 samples
    third = load_shards(rewritten.pattern, 32, index_dir)
    assert third.used == 12 and third.en[11] == ("a photo of thing 11",)
    assert len(list(index_dir.iterdir())) == 6  # every shard was rewritten (new mtimes): indexed again
    (index_dir / files[0].name).write_text("{broken")  # a damaged index entry is rebuilt, not trusted
    assert load_shards(rewritten.pattern, 32, index_dir).en == third.en


def test_shards_are_indexed_in_parallel_processes_exactly_as_in_one(corpus, tmp_path, monkeypatch):
    """issue 17: uncached shards are indexed by a pool of spawned processes, one per core; the index files and the
    corpus they give are byte for byte those of indexing in this process, and a bad shard is still one line."""
    import gzip

    from compress.data import webdataset
    from compress.errors import UserError

    written = write_shards(corpus["rows"][:16], tmp_path / "shards", samples_per_shard=4, root=corpus["root"] / "images")
    assert len(written.paths) == 4 and webdataset._index_processes(4) == min(2, len(os.sched_getaffinity(0)))
    pooled = load_shards(written.pattern, 32, tmp_path / "pooled")
    monkeypatch.setattr(webdataset, "PARALLEL_FROM", 10**9)  # one process
    alone = load_shards(written.pattern, 32, tmp_path / "alone")
    monkeypatch.undo()
    assert pooled.en == alone.en and pooled.zh == alone.zh and pooled.used == alone.used == 16
    assert torch.equal(pooled.images[list(range(16))], alone.images[list(range(16))])
    files = lambda d: {f.name: f.read_bytes() for f in d.iterdir()}  # noqa: E731
    assert files(tmp_path / "pooled") == files(tmp_path / "alone")
    shard = written.paths[2]
    shard.write_bytes(gzip.compress(shard.read_bytes()))
    with pytest.raises(UserError, match="compressed"):
        load_shards(written.pattern, 32, tmp_path / "pooled")


def _align(recipe, tok, **cfg):
    torch.manual_seed(0)
    model = build_student(recipe, tok).train()
    c = AlignConfig(**({"epochs": 2, "batch_size": 8, "lr": 1e-3} | cfg))
    return AlignStage(model.image, model.text, model.logit_scale, c), c


class Crash(Exception):
    pass


def test_worker_processes_and_a_kill_mid_epoch_change_no_bit(corpus, tmp_path):
    """The clean run builds its batches in the training process; the killed and resumed one in 2 worker processes,
    reading the images from the shards: the same losses and weights, bit for bit."""
    recipe, data, tok = corpus["recipe"], corpus["data"], corpus["tok"]
    training = TrainingConfig(checkpoint_every=1, keep_last=2, tensorboard=False)
    ctx = lambda folder, resume=False, workers=2: loop.LoopContext(  # noqa: E731
        folder=folder, seed=recipe.seed, training=training, resume=resume, workers=workers)
    full, cfg = _align(recipe, tok)
    clean = loop.train(full, data.train, tok, cfg, ctx(tmp_path / "full", workers=0))
    per_epoch = data.train.num_groups // 8
    broken, _ = _align(recipe, tok)
    steps = []

    def crash() -> None:  # mid-epoch: after step 2 of 5 in the first epoch
        steps.append(1)
        if len(steps) == 3:
            raise Crash

    broken.after_step = crash
    with pytest.raises(Crash):
        loop.train(broken, data.train, tok, cfg, ctx(tmp_path / "killed"))
    assert 3 < per_epoch
    resumed, _ = _align(recipe, tok)
    hist = loop.train(resumed, data.train, tok, cfg, ctx(tmp_path / "killed", resume=True))
    assert hist.losses == clean.losses
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_two_processes_see_every_sample_exactly_once_per_epoch(corpus):
    """accelerate's own batch-sampler shards (split_batches, as the loop runs) over the epoch plan."""
    pairs = corpus["data"].train
    plan = EpochPlan(pairs, 8, seed=3)
    for epoch in (0, 1):
        plan.epoch = epoch
        seen = []
        for rank in (0, 1):
            shard = BatchSamplerShard(plan, num_processes=2, process_index=rank, split_batches=True)
            keys = [k for batch in shard for k in batch]
            assert len(keys) == plan.batches_per_epoch * 4
            seen.append(keys)
        assert not {k[0] for k in seen[0]} & {k[0] for k in seen[1]}
        both = sorted(k[0] for keys in seen for k in keys)
        assert both == sorted({k[0] for b in plan.plan(epoch) for k in b})  # the single-process epoch, no more
        assert len(both) == len(set(both)) == plan.batches_per_epoch * 8


def test_an_image_that_changed_on_disk_is_one_line(corpus, tmp_path):
    from compress.errors import UserError

    written = write_shards(corpus["rows"][:3], tmp_path / "shards", samples_per_shard=3, root=corpus["root"] / "images")
    data = load_shards(written.pattern, 32, tmp_path / "index")
    path = written.paths[0]
    raw = bytearray(path.read_bytes())
    lo = int(data.images.offset[1])
    raw[lo:lo + 64] = b"\0" * 64  # the second image's header destroyed after indexing (same size, same mtime below)
    st = path.stat()
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(UserError) as err:
        data.images[1]
    assert "no longer decodes" in str(err.value) and "\n" not in str(err.value)
    json.dumps(str(err.value))


def test_image_only_shards_feed_stage_1(corpus, tmp_path, monkeypatch):
    """distill.unpaired_images as webdataset shards: samples need only an image, and stay on disk."""
    from webdataset.writer import TarWriter

    from compress.data.unpaired import load_image_only

    with (tmp_path / "img-000000.tar").open("wb") as f, TarWriter(f, encoder=False, mtime=0) as w:
        for row in corpus["rows"][:5]:
            ext = row["image"].rsplit(".", 1)[1]
            w.write({"__key__": row["image"].split(".")[0], ext: (corpus["root"] / "images" / row["image"]).read_bytes()})
    monkeypatch.chdir(tmp_path)
    pairs = load_image_only("img-*.tar", 32)
    assert isinstance(pairs.images, LazyImages) and len(pairs) == 5 and pairs.en == [None] * 5
    want = decode_image(io.BytesIO((corpus["root"] / "images" / corpus["rows"][2]["image"]).read_bytes()), 32)
    assert np.array_equal(pairs.images[2].numpy(), want)


@pytest.mark.parametrize("kind", ["altclip", "chinese_clip"])
def test_the_teacher_sees_its_image_processor_on_the_students_crop(corpus, tmp_path, kind):
    """issue 17: on a training crop of a non-square photo, the teacher's input equals its own image processor
    (CLIPImageProcessor / ChineseCLIPImageProcessor) on that crop within 1/255; the student's view is the same crop."""
    from transformers import AutoImageProcessor

    from compress.data.store import _resized
    from compress.teachers.hf import HFTeacher
    from compress.train.data import KeyCollate, view_augment_params
    from tests.hf_fixtures import make_tiny_altclip, make_tiny_chinese_clip

    spec = (make_tiny_altclip if kind == "altclip" else make_tiny_chinese_clip)(tmp_path / kind)
    teacher, processor = HFTeacher.from_pretrained(str(spec)), AutoImageProcessor.from_pretrained(str(spec))
    pairs = corpus["data"].train
    keys = [(1, 0), (4, 7), (9, 3)]
    sizes = [Image.open(corpus["root"] / "images" / corpus["rows"][i]["image"]).size for i, _ in keys]
    assert all(w != h for w, h in sizes)  # non-square photos
    batch = KeyCollate(pairs, 0, None, teacher.train_input)(keys)
    assert batch.teacher_pixels.shape[-1] == teacher.train_input[0] and batch.pixels.shape[-1] == 32
    params = view_augment_params(0, keys)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    for j, (i, _) in enumerate(keys):
        crop = pairs.images.crop(i, params[j], max(32, teacher.train_input[0]))
        want = processor(images=crop, return_tensors="pt")["pixel_values"][0]
        got = teacher.preprocess(batch.teacher_pixels[j : j + 1])[0]
        assert float(((got - want).abs() * std).max()) <= 1 / 255 + 1e-6, (kind, i)
        student, _ = pairs.images.train_views(np.array([i]), params[j : j + 1])
        assert np.array_equal(student[0].numpy(), _resized(crop, 32, None))
    crops = {pairs.images.crop(1, view_augment_params(0, [(1, v)])[0], 32).size for v in range(6)}
    assert len(crops) > 1  # views differ in crop size (and place)


def test_the_teacher_reads_no_more_of_a_caption_than_the_student(corpus):
    """The length rule: captions are cut to the student's window (its first context_length tokens) before a teacher
    reads them; captions that fit are untouched, and so is the teacher-cache fingerprint of data that fits."""
    from compress.data.pairs import PairSet
    from compress.train.data import KeyCollate
    from compress.train.feature_cache import cache_fingerprint

    long_zh = "一只戴着红色帽子的小狗坐在公园长椅上看着远处正在放风筝的孩子们和湖边的白色天鹅"
    long_en = "a small dog wearing a red hat sits on a park bench watching children fly kites by the lake"
    pairs = PairSet.from_captions(torch.zeros((2, 3, 8, 8), dtype=torch.uint8), [[long_en], ["a dog"]],
                                  [[long_zh], ["狗"]])
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(pairs), 300), 12)
    batch = KeyCollate(pairs, 0, tok)([(0, 0), (1, 0)])
    cut_zh, cut_en = batch.zh[0], batch.en[0]
    assert long_zh.startswith(cut_zh) and 0 < len(cut_zh) < len(long_zh)
    assert long_en.startswith(cut_en) and 0 < len(cut_en) < len(long_en)
    # exactly the student's window: the cut text encodes to the ids the student read, and one more character does not
    assert torch.equal(tok([cut_zh]), batch.zh_ids[:1]) and torch.equal(tok([long_zh]), batch.zh_ids[:1])
    assert tok.tokenizer.encode(cut_zh).overflowing == []
    assert tok.tokenizer.encode(long_zh[: len(cut_zh) + 1]).overflowing != []
    assert (batch.en[1], batch.zh[1]) == ("a dog", "狗")  # captions that fit are untouched
    recipe = corpus["recipe"]
    assert "text_window" in cache_fingerprint(recipe, pairs, identity={"kind": "test"}, tokenizer=tok)
    roomy = BilingualTokenizer(tok.tokenizer, 64)
    assert "text_window" not in cache_fingerprint(recipe, pairs, identity={"kind": "test"}, tokenizer=roomy)
