"""Flat string columns (compress/data/texts.py): they hold what the lists they replace held, item for item."""
from __future__ import annotations

import gc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.data.pairs import PairSet, stage1_pairs, text_only_pairs
from compress.data.texts import CaptionColumn, CaptionColumnBuilder, TextColumn, concat_texts

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
items = st.lists(st.one_of(st.none(), texts), max_size=30)
rows = st.lists(st.lists(texts, max_size=3).map(tuple), max_size=20)


@settings(max_examples=200, deadline=None)
@given(items, st.data())
def test_text_column_is_the_list(xs, data):
    col = TextColumn.of(xs)
    assert len(col) == len(xs) and list(col) == xs and col == xs and xs == col
    assert [col[i] for i in range(-len(xs), len(xs))] == xs + xs if xs else True
    assert col.present().tolist() == [x is not None for x in xs]
    assert list(col.dropna()) == [x for x in xs if x is not None]
    idx = data.draw(st.lists(st.integers(0, len(xs) - 1), max_size=10)) if xs else []
    assert list(col.take(idx)) == [xs[i] for i in idx]
    sl = data.draw(st.slices(len(xs)))
    assert list(col[sl]) == xs[sl]


@settings(max_examples=200, deadline=None)
@given(items, items)
def test_concat_keeps_lists_lists_and_columns_columns(a, b):
    assert concat_texts([a, b]) == a + b and isinstance(concat_texts([a, b]), list)
    joined = concat_texts([TextColumn.of(a), b])
    assert isinstance(joined, TextColumn) and list(joined) == a + b
    assert list(TextColumn.of(a) + TextColumn.of(b)) == a + b


@settings(max_examples=200, deadline=None)
@given(rows)
def test_caption_column_first_and_several(rs):
    builder = CaptionColumnBuilder()
    for r in rs:
        builder.append(r)
    col = builder.finish()
    assert isinstance(col, CaptionColumn) and list(col) == rs and col == rs and len(col) == len(rs)
    assert list(col.first()) == [r[0] if r else None for r in rs]
    assert col.several() == {i: r for i, r in enumerate(rs) if len(r) > 1}


def test_pairs_from_columns_equal_pairs_from_lists():
    en = [("a dog",), (), ("a cat", "kitty"), ("狗",)]
    zh = [("狗",), ("猫",), (), ()]
    cols = []
    for lang in (en, zh):
        b = CaptionColumnBuilder()
        for r in lang:
            b.append(r)
        cols.append(b.finish())
    images = np.zeros((4, 3, 2, 2), np.uint8)
    import torch

    a = PairSet.from_captions(torch.from_numpy(images), en, zh)
    c = PairSet.from_captions(torch.from_numpy(images), *cols)
    assert isinstance(c.en, TextColumn) and a.en == c.en and a.zh == c.zh and a.more == c.more
    assert torch.equal(a.has("en"), c.has("en")) and torch.equal(a.has("zh"), c.has("zh"))
    text = text_only_pairs(*cols, templated=False, image_shape=(3, 2, 2))
    both = stage1_pairs(c, text_only=text)
    assert list(both.en) == list(a.en) * 2 and both.more["en"] == {2: ("a cat", "kitty"), 6: ("a cat", "kitty")}


def test_a_column_is_a_few_objects_whatever_its_length():
    """The point of it: a million captions are three arrays, not a million objects for the collector to walk."""
    gc.collect()
    before = len(gc.get_objects())
    col = TextColumn.of(f"caption number {i}" for i in range(100_000))
    gc.collect()
    assert len(gc.get_objects()) - before < 50 and col[99_999] == "caption number 99999"
    assert col.nbytes < 100_000 * 30


def test_a_gather_over_several_chunks():
    xs = [None if i % 5 == 0 else "名字" * (i % 4) + str(i) for i in range(150_000)]  # > 2 chunks of 65,536
    col = TextColumn.of(xs)
    idx = np.arange(len(xs))[::-7]
    assert list(col.take(idx)) == [xs[i] for i in idx]
    assert list(col.dropna()) == [x for x in xs if x is not None]
