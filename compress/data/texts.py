"""Columns of strings stored flat: one UTF-8 buffer and an offset array, not one Python object per string.

A corpus of millions of pairs holds millions of captions and sample keys. As Python objects (a str each, a tuple per
row) they cost ~100-200 bytes apiece, and every forked DataLoader worker copies the pages it touches (reference counts
and the garbage collector's passes write to them): memory then grows with the corpus once per process. Here a column
is three numpy arrays whatever its length; an item is decoded when asked for. The embedded emoji world keeps plain
lists (a few thousand names); corpora loaded from manifests or shards use these.

`TextColumn` is a Sequence[str | None]; `CaptionColumn` a Sequence[tuple[str, ...]] (every caption of a row). Both
compare equal to any sequence with the same items, so they stand in for the lists they replace.
"""
from __future__ import annotations

from array import array
from typing import Iterable, Iterator, Sequence, overload

import numpy as np


_CHUNK = 1 << 16  # items per step of a gather: its index arrays stay a few MB whatever the column's size


def _gather(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bytes [starts[i], ends[i]) of `buf` for each i, concatenated, and the new end offsets."""
    lengths = ends - starts
    new_ends = np.cumsum(lengths, dtype=np.int64)
    total = int(new_ends[-1]) if len(new_ends) else 0
    out = np.empty(total, np.uint8)
    for a in range(0, len(lengths), _CHUNK):
        s, n = starts[a:a + _CHUNK], lengths[a:a + _CHUNK]
        first = int(new_ends[a] - n[0]) if len(n) else 0
        size = int(n.sum())
        if size:
            # output byte j of the chunk reads buf[s[i] + (j - its item's start)] for the item i that j falls in
            shift = np.repeat(s - (np.cumsum(n) - n), n)
            out[first:first + size] = buf[np.arange(size, dtype=np.int64) + shift]
    return out, new_ends


class TextColumn(Sequence):
    """Strings (or None) in one UTF-8 buffer: item i is buf[ends[i-1]:ends[i]] decoded, None where not present[i]."""

    __slots__ = ("_buf", "_ends", "_present")

    def __init__(self, buf: np.ndarray, ends: np.ndarray, present: np.ndarray) -> None:
        self._buf, self._ends, self._present = buf, ends, present

    @classmethod
    def of(cls, items: Iterable[str | None]) -> "TextColumn":
        builder = TextColumnBuilder()
        for s in items:
            builder.append(s)
        return builder.finish()

    def __len__(self) -> int:
        return len(self._ends)

    def _start(self, i: int) -> int:
        return int(self._ends[i - 1]) if i else 0

    def _item(self, i: int) -> str | None:
        if not self._present[i]:
            return None
        return self._buf[self._start(i):int(self._ends[i])].tobytes().decode("utf-8")

    @overload
    def __getitem__(self, i: int) -> str | None: ...
    @overload
    def __getitem__(self, i: slice) -> "TextColumn": ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"TextColumn index {i} out of range for {n} items")
        return self._item(i % n)

    def __iter__(self) -> Iterator[str | None]:
        buf, start = self._buf, 0
        for end, there in zip(self._ends.tolist(), self._present.tolist()):
            yield buf[start:end].tobytes().decode("utf-8") if there else None
            start = end

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextColumn):
            return (len(self) == len(other) and np.array_equal(self._present, other._present)
                    and list(self) == list(other))
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # mutable-sequence semantics, like the lists it stands for

    def __add__(self, other: Sequence[str | None]) -> "TextColumn":
        return concat_texts([self, other])

    def __radd__(self, other: Sequence[str | None]) -> "TextColumn":
        return concat_texts([other, self])

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:3])
        return f"TextColumn([{head}{', ...' if len(self) > 3 else ''}], {len(self)} items)"

    def present(self) -> np.ndarray:
        """bool (n,): which items are strings (not None)."""
        return self._present.astype(bool)

    def dropna(self) -> "TextColumn":
        """The strings without the Nones, sharing this column's buffer (a None holds no bytes)."""
        keep = self._present.astype(bool)
        return TextColumn(self._buf, self._ends[keep], self._present[keep])

    def take(self, index: Sequence[int] | np.ndarray) -> "TextColumn":
        """The items at `index`, in that order, as a new column."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        ends = self._ends
        starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])[idx] if len(ends) else np.zeros(0, np.int64)
        buf, new_ends = _gather(self._buf, starts, ends[idx] if len(idx) else np.zeros(0, np.int64))
        return TextColumn(buf, new_ends, self._present[idx])

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes + self._ends.nbytes + self._present.nbytes


class TextColumnBuilder:
    """Appends strings into growable buffers (no per-item objects kept), then `finish()`es a TextColumn."""

    def __init__(self) -> None:
        self._buf, self._ends, self._present = bytearray(), array("q"), array("b")

    def __len__(self) -> int:
        return len(self._ends)

    def append(self, s: str | None) -> None:
        if s is not None:
            self._buf += s.encode("utf-8")
        self._ends.append(len(self._buf))
        self._present.append(s is not None)

    def finish(self) -> TextColumn:
        """The column, sharing the builder's buffers (no copy): appending afterwards raises BufferError."""
        return TextColumn(np.frombuffer(self._buf, np.uint8), np.frombuffer(self._ends, np.int64),
                          np.frombuffer(self._present, np.int8))


def concat_texts(parts: Sequence[Sequence[str | None]]) -> Sequence[str | None]:
    """The parts one after another: a plain list when every part is one (the emoji world's lists stay lists), else a
    TextColumn."""
    if all(isinstance(p, list) for p in parts):
        return [x for p in parts for x in p]
    cols = [p if isinstance(p, TextColumn) else TextColumn.of(p) for p in parts]
    offsets = np.cumsum([0] + [int(c._ends[-1]) if len(c) else 0 for c in cols[:-1]], dtype=np.int64)
    return TextColumn(np.concatenate([c._buf for c in cols]) if cols else np.zeros(0, np.uint8),
                      np.concatenate([c._ends + o for c, o in zip(cols, offsets)]) if cols else np.zeros(0, np.int64),
                      np.concatenate([c._present for c in cols]) if cols else np.zeros(0, np.int8))


class CaptionColumn(Sequence):
    """Every caption of each row (a tuple, empty where the row has none), flat: row r's captions are
    texts[rows[r]:rows[r+1]]."""

    __slots__ = ("texts", "rows")

    def __init__(self, texts: TextColumn, rows: np.ndarray) -> None:
        self.texts, self.rows = texts, rows

    def __len__(self) -> int:
        return len(self.rows) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"CaptionColumn index {i} out of range for {n} rows")
        i %= n
        return tuple(self.texts[j] for j in range(int(self.rows[i]), int(self.rows[i + 1])))

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        it, rows = iter(self.texts), self.rows.tolist()
        for a, b in zip(rows[:-1], rows[1:]):
            yield tuple(next(it) for _ in range(b - a))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and list(self) == [tuple(x) for x in other]
        return NotImplemented

    __hash__ = None

    def counts(self) -> np.ndarray:
        return np.diff(self.rows)

    def first(self) -> TextColumn:
        """Each row's first caption, None for a row without one."""
        has = self.counts() > 0
        if has.any() and self.counts().max() > 1:  # rows with several captions: copy the first ones out
            src = self.texts.take(self.rows[:-1][has])
        else:  # a caption per row at most: these are all the captions, so the bytes are shared, not copied
            src = self.texts
        ends = np.zeros(len(self), np.int64)
        ends[has] = src._ends if src is not self.texts else src._ends[self.rows[:-1][has]]
        ends = np.maximum.accumulate(ends) if len(ends) else ends  # a row with none ends where the one before did
        return TextColumn(src._buf, ends, has.astype(np.int8))

    def several(self) -> dict[int, tuple[str, ...]]:
        """row -> all its captions, for the rows with two or more (PairSet.more)."""
        return {int(r): self[int(r)] for r in np.flatnonzero(self.counts() > 1)}


class CaptionColumnBuilder:
    def __init__(self) -> None:
        self._texts, self._rows = TextColumnBuilder(), array("q", [0])

    def __len__(self) -> int:
        return len(self._rows) - 1

    def append(self, captions: Iterable[str]) -> None:
        for c in captions:
            self._texts.append(c)
        self._rows.append(len(self._texts))

    def finish(self) -> CaptionColumn:
        return CaptionColumn(self._texts.finish(), np.frombuffer(self._rows, np.int64))
