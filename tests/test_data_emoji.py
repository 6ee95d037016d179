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


# ------------------------------------------------------------------------------- train styles and subset relation
STYLE_ARGS = dict(image_size=32, eval_renders=1, unseen_fraction=0.2, seed=0, limit=20)


@pytest.fixture(scope="module")
def styled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, E.EmojiData]:
    """A student-like build and two teacher-like ones: more renders and/or the Noto style on top."""
    if E.transfer_font_path() is None:
        pytest.skip(f"transfer font not installed ({E.TRANSFER_FONT_INSTALL})")
    cache = tmp_path_factory.mktemp("emoji-styles")
    return {
        "student": E.build_emoji_dataset(cache, train_renders=2, train_styles=["openmoji"], **STYLE_ARGS),
        "both2": E.build_emoji_dataset(cache, train_renders=2, train_styles=["openmoji", "noto"], **STYLE_ARGS),
        "teacher": E.build_emoji_dataset(cache, train_renders=4, train_styles=["noto", "openmoji"], **STYLE_ARGS),
    }


def _by_key(data: E.EmojiData) -> dict[tuple[str, int, int], torch.Tensor]:
    train = data.splits["train"]
    keys = E.train_keys(train)
    assert len(set(keys)) == len(keys)  # a key names one sample
    return dict(zip(keys, train.images))


def test_train_renders_nest_byte_for_byte(styled: dict[str, E.EmojiData]) -> None:
    student, both2, teacher = (_by_key(styled[k]) for k in ("student", "both2", "teacher"))
    # Fewer renders = the first renders of each (style, class); fewer styles = a subset of styles; same bytes.
    for small, big in ((student, both2), (both2, teacher), (student, teacher)):
        assert set(small) < set(big)
        for key, img in small.items():
            assert torch.equal(img, big[key]), key
    assert {k for k in teacher if k[2] < 2} == set(both2)
    assert {k for k in both2 if k[0] == "openmoji"} == set(student)
    # The other splits do not depend on the train settings at all.
    for name in ("eval", "transfer", "unseen"):
        for other in ("both2", "teacher"):
            assert torch.equal(styled["student"].splits[name].images, styled[other].splits[name].images), name
    # The pure check agrees, and says why when it does not hold.
    args = {k: styled[k].args for k in styled}
    assert E.check_train_subset(args["student"], args["teacher"]) == []
    assert E.check_train_subset(args["both2"], args["teacher"]) == []
    assert E.check_train_subset(args["teacher"], args["teacher"])  # same data: not a strict subset
    assert any("train_renders" in p for p in E.check_train_subset(args["teacher"], args["both2"]))
    assert any("train_styles" in p for p in E.check_train_subset(args["both2"], args["student"]))
    assert any("seed" in p for p in E.check_train_subset({**args["student"], "seed": 1}, args["teacher"]))
    other_split = {**args["student"], "unseen_fraction": 0.4}
    assert any("unseen_fraction" in p for p in E.check_train_subset(other_split, args["teacher"]))


def test_train_styles_are_labelled_and_laid_out_style_major(styled: dict[str, E.EmojiData]) -> None:
    data = styled["teacher"]
    train = data.splits["train"]
    styles = train.styles.tolist()
    assert set(styles) == {0, 1} and styles == sorted(styles)  # every OpenMoji render, then every Noto render
    assert E.STYLES[0] == "openmoji" and E.STYLES[1] == "noto"
    om, noto = train.labels[train.styles == 0], train.labels[train.styles == 1]
    counts = torch.bincount(om, minlength=STYLE_ARGS["limit"])
    assert all(counts[i] == 4 for i in data.seen_ids) and len(om) == 4 * len(data.seen_ids)
    # Noto renders exist for exactly the seen classes Noto can draw: the transfer split's classes.
    assert sorted(set(noto.tolist())) == data.splits["transfer"].class_ids
    assert torch.equal(torch.bincount(noto), torch.bincount(torch.tensor(data.splits["transfer"].class_ids).repeat(4)))
    assert train.class_ids == data.seen_ids  # labels stay global class indices
    # The style label is right: a black Noto glyph over a light background (channels in [190, 255]) never has a
    # pixel chroma above 65; OpenMoji's colours do (measured: 0 % vs ~25 % of pixels).
    chroma = train.images.float().amax(1) - train.images.float().amin(1)
    assert float((chroma[train.styles == 1] > 80).float().mean()) == 0.0
    assert float((chroma[train.styles == 0] > 80).float().mean()) > 0.05
    for name, style in (("eval", 0), ("transfer", 1), ("unseen", 0)):
        assert set(data.splits[name].styles.tolist()) <= {style}, name
    # Same samples after a cache round trip.
    cache = data.cache_path.parent
    again = E.build_emoji_dataset(cache, train_renders=4, train_styles=["openmoji", "noto"], **STYLE_ARGS)
    assert again.from_cache and again.cache_path == data.cache_path
    assert E.train_keys(again.splits["train"]) == E.train_keys(train) and again.args == data.args


def test_noto_train_renders_are_not_transfer_renders(styled: dict[str, E.EmojiData]) -> None:
    data = styled["teacher"]
    train, transfer = data.splits["train"], data.splits["transfer"]
    noto = train.images[train.styles == 1]
    noto_labels = train.labels[train.styles == 1]
    for img, label in zip(transfer.images, transfer.labels.tolist()):
        same_class = noto[noto_labels == label]
        assert len(same_class) == 4
        assert all(not torch.equal(img, t) for t in same_class), label
    # Not even near copies: the nearest Noto train render of the class is clearly another draw.
    diffs = [
        float((noto[noto_labels == label].float() - img.float()).abs().mean(dim=(1, 2, 3)).min())
        for img, label in zip(transfer.images, transfer.labels.tolist())
    ]
    assert min(diffs) > 1.0


def test_unseen_classes_are_in_no_train_style(styled: dict[str, E.EmojiData]) -> None:
    for data in styled.values():
        unseen = set(data.splits["unseen"].class_ids)
        assert unseen and unseen.isdisjoint(data.seen_ids)
        train = data.splits["train"]
        for style in range(len(E.STYLES)):
            assert unseen.isdisjoint(train.labels[train.styles == style].tolist()), style


def test_pairs_group_both_styles_of_a_class_together(styled: dict[str, E.EmojiData]) -> None:
    from compress.pipeline.data import emoji_pairs

    data = styled["teacher"]
    pairs = emoji_pairs(data)
    train = data.splits["train"]
    assert len(pairs) == len(train) and pairs.num_groups == len(data.seen_ids)
    by_index = {c.index: c for c in data.classes}
    for g, label in zip(pairs.groups.tolist(), train.labels.tolist()):
        assert pairs.en[g] == by_index[label].en and pairs.zh[g] == by_index[label].zh
    group_styles: dict[int, set[int]] = {}
    for g, s in zip(pairs.groups.tolist(), train.styles.tolist()):
        group_styles.setdefault(g, set()).add(s)
    assert sum(1 for v in group_styles.values() if v == {0, 1}) == len(data.splits["transfer"].class_ids)


def test_cache_key_and_config_carry_train_styles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compress.errors import UserError
    from compress.recipe.schema import DataConfig

    base = dict(image_size=32, train_renders=2, eval_renders=1, unseen_fraction=0.1, seed=0, limit=20)
    one, two = ({**base, "train_styles": styles} for styles in (["openmoji"], ["openmoji", "noto"]))
    assert E._cache_key(one) != E._cache_key(two)
    assert E.normalize_styles(["noto", "openmoji"]) == ("openmoji", "noto")
    with pytest.raises(ValueError):
        E.normalize_styles([])
    with pytest.raises(ValueError):
        E.normalize_styles(["sketch"])
    assert DataConfig().train_styles == ["openmoji"]
    assert DataConfig(train_styles=["noto", "openmoji"]).train_styles == ["openmoji", "noto"]
    for bad in ([], ["noto", "noto"], ["sketch"]):
        with pytest.raises(Exception):
            DataConfig(train_styles=bad)
    # Asking for Noto train renders without the font is an error, not a silently smaller teacher set.
    monkeypatch.setattr(E, "transfer_font_path", lambda: None)
    with pytest.raises(UserError, match="manimgx-fonts"):
        E.build_emoji_dataset(tmp_path, **{**base, "limit": 8}, train_styles=["openmoji", "noto"])
