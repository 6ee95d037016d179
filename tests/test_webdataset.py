"""WebDataset tar shards: written from a manifest, read back into the very PairSet the manifest gives, damaged
samples skipped and counted, a missing pattern a one-line UserError, order independent of directory listing."""
from __future__ import annotations

import glob
import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from compress.data import webdataset as wds_data
from compress.pipeline.data import load_run_data
from compress.data.webdataset import expand_shards, load_shards, manifest_to_shards, write_shards
from compress.data.store import LazyImages
from compress.errors import UserError
from compress.recipe import DataConfig, parse_recipe


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    img = Image.new("RGB", size, colour)
    img.paste((255 - colour[0], colour[1] // 2, 40), (2, 2, size[0] // 2, size[1] // 3))  # some structure to resample
    img.save(path)


def _manifest(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for i in range(7):
        name = f"img{i}.jpg" if i % 2 else f"img{i}.png"
        _image(root / name, (24 + 5 * i, 30 - i), (30 * i, 200 - 20 * i, 90))
        rows.append({"image": name, "en": f"picture number {i}", "zh": f"第{i}张图片"})
    rows[1]["zh"] = ["第一张", "另一种说法"]  # several captions in one language
    del rows[2]["zh"]  # English only
    rows[4] = {"image": "img4.png", "en": "", "zh": "只有中文"}  # Chinese only
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 4)
    rows.insert(5, {"image": "broken.jpg", "en": "unreadable", "zh": "坏图"})  # skipped by both loaders
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(emoji_cache: Path, **kw) -> DataConfig:
    return DataConfig(image_size=32, limit=8, train_renders=1, cache_dir=str(emoji_cache), **kw)


def test_shards_round_trip_through_load_run_data(tmp_path: Path, emoji_cache: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # data.shards is relative to the working directory
    manifest = _manifest(tmp_path / "data")
    written = manifest_to_shards(manifest, "shards", samples_per_shard=3)
    assert [p.name for p in written.paths] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert written.pattern == "shards/train-{000000..000002}.tar" and written.samples == 8 and written.skipped == {}

    from_shards = load_run_data(_cfg(emoji_cache, kind="webdataset", shards=written.pattern), seed=0)
    from_manifest = load_run_data(_cfg(emoji_cache, kind="manifest", manifest=str(manifest)), seed=0)
    a, b = from_shards.train, from_manifest.train
    assert from_shards.source == "webdataset:shards/train-{000000..000002}.tar"
    assert a.images.dtype == torch.uint8 and a.images.shape == (7, 3, 32, 32)
    assert isinstance(a.images, LazyImages) and isinstance(b.images, LazyImages)  # both corpora stay on disk
    assert torch.equal(a.images[:], b.images[:])  # same bytes, same decode: identical pixels
    assert a.en == b.en and a.zh == b.zh and a.more == b.more and torch.equal(a.groups, b.groups)
    assert a.en == ["picture number 0", "picture number 1", "picture number 2", "picture number 3", None,
                    "picture number 5", "picture number 6"]
    assert a.zh == ["第0张图片", "第一张", None, "第3张图片", "只有中文", "第5张图片", "第6张图片"]
    assert a.more == {"zh": {1: ("第一张", "另一种说法")}}
    assert a.has("en").tolist() == [True, True, True, True, False, True, True]
    assert a.has("zh").tolist() == [True, True, False, True, True, True, True]
    assert a.captions([2, 4], "zh", random.Random(0)) == [None, "只有中文"]
    # The undecodable image is skipped and counted the same way by both loaders.
    assert from_shards.skipped == from_manifest.skipped == {"corrupt_image": 1}
    assert from_shards.eval_splits.keys() == from_manifest.eval_splits.keys()

    # Deterministic bytes: writing again (over the old shards) gives identical files.
    before = [p.read_bytes() for p in written.paths]
    again = manifest_to_shards(manifest, "shards", samples_per_shard=3, overwrite=True)
    assert [p.read_bytes() for p in again.paths] == before


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), colour).save(buf, format="PNG")
    return buf.getvalue()


def _js(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def test_damaged_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    red, green, blue = _png_bytes((250, 0, 0)), _png_bytes((0, 250, 0)), _png_bytes((0, 0, 250))
    _tar(tmp_path / "a-000000.tar", [
        ("ok.png", red), ("ok.json", _js({"en": "red", "zh": "红色"})),
        ("corrupt.jpg", b"\xff\xd8\xff garbage"), ("corrupt.json", _js({"en": "broken", "zh": "坏"})),
        ("badjson.png", red), ("badjson.json", b"{not json"),
        ("nocap.png", red), ("nocap.json", _js({"url": "http://x", "status": "success"})),
        ("wrongtype.png", red), ("wrongtype.json", _js({"en": 7})),
        ("noimage.json", _js({"en": "where is the picture"})),
        ("dup.png", green), ("dup.png", red), ("dup.json", _js({"en": "green"})),
        # per-language text files, and img2dataset's single .txt caption (language told by its script)
        ("dir/txt.PNG", blue), ("dir/txt.en.txt", b"blue\n"), ("dir/txt.zh.txt", "蓝色".encode()),
        ("img2ds.jpg", _jpeg_bytes()), ("img2ds.txt", "一只猫".encode()), ("img2ds.json", _js({"caption": "一只猫"})),
        ("both.png", green), ("both.json", _js({"en": ["green", "grass"]})), ("both.en.txt", b"grass"),
    ])
    # A second shard cut off mid-member (an interrupted download): samples before the damage are kept.
    whole = _tar(tmp_path / "full.tar", [
        ("k1.png", green), ("k1.json", _js({"zh": "绿色"})), ("k2.png", _png_bytes((9, 9, 9)) + b"\0" * 4000),
        ("k2.json", _js({"en": "lost"})),
    ]).read_bytes()
    (tmp_path / "a-000001.tar").write_bytes(whole[:2600])
    (tmp_path / "full.tar").unlink()

    data = load_shards(str(tmp_path / "a-{000000..000001}.tar"), image_size=16)
    assert data.skipped == {"corrupt_image": 1, "bad_json": 1, "no_caption": 1, "missing_field": 1,
                            "missing_image": 1, "duplicate_member": 1, "corrupt_shard": 1}
    where = [(w.rsplit("/", 1)[-1], r) for w, r in data.skipped_samples]
    assert where[:5] == [("a-000000.tar:corrupt", "corrupt_image"), ("a-000000.tar:badjson", "bad_json"),
                         ("a-000000.tar:nocap", "no_caption"), ("a-000000.tar:wrongtype", "missing_field"),
                         ("a-000000.tar:noimage", "missing_image")]
    assert data.en == [("red",), ("green",), ("blue",), (), ("green", "grass"), ()]
    assert data.zh == [("红色",), (), ("蓝色",), ("一只猫",), (), ("绿色",)]
    assert data.used == 6 and data.images.shape == (6, 3, 16, 16)
    assert data.images[1, :, 8, 8].tolist()[1] > 200  # the first "dup.png" (green) is kept, the second ignored


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def test_missing_or_bad_shards_are_one_line_user_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for pattern, expected in [
        ("data/shards/train-{000000..000009}.tar", "10 of 10 shards not found (first: data/shards/train-000000.tar)"),
        ("data/shards/*.tar", "matches no file"),
        ("data/shards/train-{0..3.tar", "unbalanced braces"),
    ]:
        with pytest.raises(UserError) as err:
            load_shards(pattern)
        msg = str(err.value)
        assert "\n" not in msg and pattern in msg and expected in msg and "brace pattern such as" in msg
    # Some shards present, one missing: still refused (an incomplete download should not train silently).
    _tar(tmp_path / "s-0.tar", [("a.png", _png_bytes((1, 2, 3))), ("a.json", _js({"en": "x"}))])
    with pytest.raises(UserError, match=r"1 of 2 shards not found \(first: s-1.tar\)"):
        load_shards("s-{0..1}.tar")
    # Shards that hold nothing usable.
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(UserError, match=r"no usable samples in 1 shards \(corrupt_shard=1\)"):
        load_shards("junk.tar")
    # The recipe names the missing key.
    with pytest.raises(UserError, match="data.shards: kind 'webdataset' needs a shard pattern"):
        parse_recipe({"name": "x", "data": {"kind": "webdataset"}})


def test_order_is_sorted_shards_then_members_whatever_the_listing(tmp_path: Path, monkeypatch) -> None:
    for i in (10, 2, 1):  # natural order 1, 2, 10 (not "1", "10", "2")
        _tar(tmp_path / f"part-{i}.tar", [(f"z{i}.png", _png_bytes((i, i, i))), (f"z{i}.json", _js({"en": f"s{i}a"})),
                                          (f"a{i}.png", _png_bytes((i, i, i))), (f"a{i}.json", _js({"en": f"s{i}b"}))])
    expected = [("s1a",), ("s1b",), ("s2a",), ("s2b",), ("s10a",), ("s10b",)]
    real_glob = glob.glob
    monkeypatch.setattr(wds_data.glob, "glob", lambda p: sorted(real_glob(p), reverse=True))
    assert [p.name for p in expand_shards(str(tmp_path / "part-*.tar"))] == ["part-1.tar", "part-2.tar", "part-10.tar"]
    assert load_shards(str(tmp_path / "part-*.tar"), image_size=16).en == expected
    assert load_shards(str(tmp_path / "part-{10,2,1}.tar"), image_size=16).en == expected


def test_writer_skips_unusable_rows_and_guards_old_shards(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    _image(root / "a.jpeg", (20, 20), (10, 20, 30))
    _image(tmp_path / "outside.png", (20, 20), (10, 20, 30))
    rows = [
        {"image": "a.jpeg", "en": "a", "zh": "甲"},
        None,  # a line that was not JSON
        {"image": "a.jpeg"},  # no caption
        {"image": "../outside.png", "en": "escape"},
        {"image": "gone.png", "en": "missing"},
        {"image": "a.jpeg", "zh": ["乙", "丙"]},
    ]
    out = tmp_path / "out"
    w = write_shards(rows, out, samples_per_shard=1, root=root)
    assert w.samples == 2 and [p.name for p in w.paths] == ["train-000000.tar", "train-000001.tar"]
    assert w.skipped == {"bad_json": 1, "no_caption": 1, "unsafe_path": 1, "missing_image": 1}
    with tarfile.open(w.paths[1]) as tar:
        assert tar.getnames() == ["000000001.jpg", "000000001.json"]
        assert json.loads(tar.extractfile("000000001.json").read()) == {"zh": ["乙", "丙"]}
    with pytest.raises(UserError, match="already holds 2 train-\\*.tar shards"):
        write_shards(rows, out, samples_per_shard=1, root=root)
    w2 = write_shards(rows, out, samples_per_shard=5, root=root, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar"]  # the stale second shard is gone
    assert w2.pattern == str(out / "train-000000.tar")
    assert load_shards(w2.pattern, image_size=16).zh == [("甲",), ("乙", "丙")]
    with pytest.raises(UserError, match="no usable rows to write"):
        write_shards([None, {"image": "gone.png", "en": "x"}], tmp_path / "empty", root=root)
