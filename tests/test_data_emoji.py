"""The built-in emoji-zh-en data set and the on-the-fly training augmentation, on real renders (no mocks)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opencc_purepy import OpenCC
from PIL import Image

from compress.data import emoji as E
from compress.data.augment import _grid, to_float, train_augment

LIMIT = 40
ARGS = dict(image_size=64, train_renders=3, eval_renders=2, unseen_fraction=0.1, seed=0, limit=LIMIT)

needs_transfer_font = pytest.mark.skipif(
    E.transfer_font_path() is None, reason=f"transfer font not installed ({E.TRANSFER_FONT_INSTALL})"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, E.EmojiData, float]:
    cache = tmp_path_factory.mktemp("emoji-cache")
    E.emoji_classes()  # warm the class list so the timing below is the build alone
    t0 = time.perf_counter()
    data = E.build_emoji_dataset(cache, **ARGS)
    return cache, data, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------ classes
def test_class_list_is_large_unique_and_ordered() -> None:
    classes = E.emoji_classes()
    assert len(classes) >= 1900
    assert [c.index for c in classes] == list(range(len(classes)))
    assert [c.emoji for c in classes] == sorted(c.emoji for c in classes)
    assert len({c.en for c in classes}) == len(classes)
    assert len({c.zh for c in classes}) == len(classes)
    assert all(c.en == c.en.lower() and ":" not in c.en and "_" not in c.en for c in classes)
    assert not any(0x1F3FB <= ord(ch) <= 0x1F3FF for c in classes for ch in c.emoji)  # skin tones folded
    by_emoji = {c.emoji: c for c in classes}
    assert by_emoji["\U0001F436"].en == "dog face" and by_emoji["\U0001F436"].zh == "狗脸"
    assert E.emoji_classes() == classes  # deterministic


def test_chinese_names_are_simplified() -> None:
    classes = E.emoji_classes()
    zh = {c.zh for c in classes}
    assert "澳门" in zh and "澳門" not in zh  # flag: Macao SAR China
    assert "印度尼西亚" in zh
    assert "结束箭头" in zh  # opencc-purepy's phrase table wrongly turns 结束 into 結束; we must not
    cc = OpenCC("t2s")
    chars = {ch for name in zh for ch in name}
    assert [ch for ch in sorted(chars) if cc.convert(ch) != ch] == []
    assert E.to_simplified("澳門") == "澳门"


# -------------------------------------------------------------------------------------------------------- build
def test_build_shapes_dtypes_and_label_spaces(built: tuple[Path, E.EmojiData, float]) -> None:
    _, data, _ = built
    assert [c.index for c in data.classes] == list(range(LIMIT))
    assert set(data.splits) == {"train", "eval", "transfer", "unseen"}
    for name, split in data.splits.items():
        assert split.images.dtype == torch.uint8, name
        assert split.labels.dtype == torch.int64, name
        assert split.images.shape[1:] == (3, 64, 64), name
        assert split.images.shape[0] == split.labels.shape[0] == len(split), name
        assert set(split.labels.tolist()) <= set(split.class_ids), name

    unseen = data.splits["unseen"].class_ids
    seen = data.seen_ids
    assert len(unseen) == round(LIMIT * 0.1)
    assert sorted(seen + unseen) == list(range(LIMIT))
    assert data.splits["train"].class_ids == seen and data.splits["eval"].class_ids == seen
    counts = torch.bincount(data.splits["train"].labels, minlength=LIMIT)
    assert all(counts[i] == ARGS["train_renders"] for i in seen)
    assert len(data.splits["eval"]) == len(seen) * ARGS["eval_renders"]
    assert len(data.splits["unseen"]) == len(unseen) * ARGS["eval_renders"]
    assert set(data.splits["transfer"].class_ids) <= set(seen)
    # Eval renders are other draws than the train renders, not copies.
    assert not torch.equal(data.splits["train"].images[:1], data.splits["eval"].images[:1])


def test_unseen_classes_never_reach_training(built: tuple[Path, E.EmojiData, float]) -> None:
    _, data, _ = built
    unseen = set(data.splits["unseen"].class_ids)
    for name in ("train", "eval", "transfer"):
        assert unseen.isdisjoint(data.splits[name].labels.tolist()), name
        assert unseen.isdisjoint(data.splits[name].class_ids), name
    assert set(data.splits["unseen"].labels.tolist()) == unseen


def test_build_is_deterministic(built: tuple[Path, E.EmojiData, float], tmp_path: Path) -> None:
    _, first, _ = built
    second = E.build_emoji_dataset(tmp_path, **ARGS)
    assert not second.from_cache
    for name in first.splits:
        assert torch.equal(first.splits[name].images, second.splits[name].images), name
        assert torch.equal(first.splits[name].labels, second.splits[name].labels), name
        assert first.splits[name].class_ids == second.splits[name].class_ids, name
    other_seed = E.build_emoji_dataset(tmp_path, **{**ARGS, "seed": 1})
    assert not torch.equal(first.splits["train"].images, other_seed.splits["train"].images)


def test_second_call_loads_from_cache(built: tuple[Path, E.EmojiData, float]) -> None:
    cache, first, build_s = built
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1 and files[0] == first.cache_path
    mtime = files[0].stat().st_mtime_ns
    t0 = time.perf_counter()
    again = E.build_emoji_dataset(cache, **ARGS)
    load_s = time.perf_counter() - t0
    assert again.from_cache and not first.from_cache
    assert files[0].stat().st_mtime_ns == mtime  # not rewritten
    assert load_s < build_s
    assert again.classes == first.classes and again.seen_ids == first.seen_ids
    for name in first.splits:
        assert torch.equal(first.splits[name].images, again.splits[name].images), name
        assert torch.equal(first.splits[name].labels, again.splits[name].labels), name
        assert first.splits[name].class_ids == again.splits[name].class_ids, name
    assert not list(cache.glob(".*"))  # no temp files left behind
    # Any argument change is a different cache entry.
    assert E._cache_key({**ARGS}) != E._cache_key({**ARGS, "image_size": 32})


@needs_transfer_font
def test_transfer_style_is_visibly_different(built: tuple[Path, E.EmojiData, float]) -> None:
    _, data, _ = built
    transfer = data.splits["transfer"]
    assert len(transfer) >= len(data.seen_ids) - 2  # Noto Emoji lacks only a few (newest) emoji

    def clean(font: E._GlyphFont, ch: str) -> np.ndarray:
        glyph = font.render(ch)
        flat = Image.new("RGB", glyph.size, "white")
        flat.paste(glyph, (0, 0), glyph)
        return np.asarray(flat.resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float32)

    om = E._font(str(E.openmoji_font_path()), E.BASE_SIZE)
    tf = E._font(str(E.transfer_font_path()), E.BASE_SIZE)
    by_index = {c.index: c for c in data.classes}
    diffs = [np.abs(clean(om, by_index[i].emoji) - clean(tf, by_index[i].emoji)).mean() for i in transfer.class_ids]
    assert float(np.mean(diffs)) > 40.0  # same class, other style: big pixel change (measured ~118)

    def colourfulness(images: torch.Tensor) -> float:
        x = images.float()
        return float((x.max(1).values - x.min(1).values).mean())

    # Noto Emoji is monochrome: the transfer split is far less colourful than OpenMoji's renders.
    assert colourfulness(transfer.images) < 0.5 * colourfulness(data.splits["eval"].images)


def test_missing_transfer_font_gives_empty_split_and_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulates a machine without the transfer font package: the locator finds nothing.
    monkeypatch.setattr(E, "transfer_font_path", lambda: None)
    with caplog.at_level(logging.WARNING, logger=E.__name__):
        data = E.build_emoji_dataset(tmp_path, image_size=32, train_renders=1, eval_renders=1, limit=12)
    transfer = data.splits["transfer"]
    assert transfer.images.shape == (0, 3, 32, 32) and transfer.labels.shape == (0,) and transfer.class_ids == []
    assert len(data.splits["train"]) > 0
    assert any(E.TRANSFER_FONT_INSTALL in r.getMessage() for r in caplog.records)


def test_preview_writes_contact_sheet(tmp_path: Path) -> None:
    E.main(["--out", str(tmp_path), "--limit", "12", "--image-size", "32"])
    with Image.open(tmp_path / "emoji-preview.png") as im:
        assert im.width > 200 and im.height > 100
    tsv = (tmp_path / "emoji-preview.tsv").read_text(encoding="utf-8")
    assert "keycap #" in tsv and "按键 #" in tsv


# ------------------------------------------------------------------------------------------------------ augment
def test_grid_matches_affine_grid() -> None:
    zoom = torch.tensor([0.9, 1.0, 1.1])
    shift = torch.tensor([[0.05, -0.02], [0.0, 0.0], [-0.08, 0.08]])
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = shift
    ref = F.affine_grid(theta, [3, 3, 16, 20], align_corners=False)
    assert torch.allclose(_grid(zoom, shift, 16, 20), ref, atol=1e-6)


def test_train_augment_range_shape_and_seeding(built: tuple[Path, E.EmojiData, float]) -> None:
    _, data, _ = built
    x = data.splits["train"].images[:32]
    a = train_augment(x, torch.Generator().manual_seed(0))
    b = train_augment(x, torch.Generator().manual_seed(0))
    c = train_augment(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    base = to_float(x)
    assert base.dtype == torch.float32 and torch.equal(base * 255, x.float())
    # Border padding keeps a plain background plain (no black edges); only brightness moves it, by <= 15 %.
    plain = torch.full((8, 3, 64, 64), 200, dtype=torch.uint8)
    out = train_augment(plain, torch.Generator().manual_seed(2))
    per_image = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    assert float(per_image.max()) < 1e-5
    assert 0.85 * 200 / 255 - 1e-5 <= float(out.min()) and float(out.max()) <= 1.15 * 200 / 255 + 1e-5
    assert train_augment(x[:0], torch.Generator()).shape == (0, 3, 64, 64)
