"""Damage for the fuzz tests of what the CLI reads (issue 19): hypothesis strategies that break a file's bytes or its
JSON structure, a tree hash to prove a command changed nothing outside its own output, and the one-line check."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from hypothesis import Phase, event
from hypothesis import strategies as st

from tests.helpers import invoke

# A failing case is reported as found: shrinking one that got past a check would rerun whole exports for minutes.
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6)

# how: truncate (keep a prefix), flip (xor one byte), pickle (a pickle's opening bytes in front), junk (one byte
# repeated), empty, gbk (a non-UTF-8 byte in the text)
BYTE_DAMAGE = st.tuples(st.sampled_from(["truncate", "flip", "pickle", "junk", "empty", "latin"]),
                        st.floats(0, 1), st.integers(1, 255))


def damage_bytes(data: bytes, how: str, at: float, byte: int) -> bytes:
    i = min(max(len(data) - 1, 0), int(at * len(data)))
    if how == "truncate":
        return data[:i]
    if how == "flip" and data:
        return data[:i] + bytes([data[i] ^ byte]) + data[i + 1:]
    if how == "pickle":
        return b"\x80\x04\x95" + data[i:]
    if how == "junk":
        return bytes([byte]) * max(1, i)
    if how == "latin":
        return data[:i] + b"\xff\xfe" + data[i:]
    return b""


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a JSON document (keys and list indices)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(doc: Any, draw, within: tuple = ()) -> Any:
    """A copy of `doc` with one node under `within` replaced by another JSON value, deleted, or given an extra key."""
    doc = copy.deepcopy(doc)
    paths = [p for p in _paths(doc) if p[:len(within)] == within]
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["replace", "delete", "add"] if path else ["replace"]))
    event(f"json {how}")
    if not path:
        return draw(JSON_VALUES.filter(lambda v: v != doc))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if how == "replace":
        parent[key] = draw(JSON_VALUES.filter(lambda v: v != parent[key]))
    elif how == "delete":
        del parent[key]
    elif isinstance(parent[key], dict):
        parent[key][draw(st.text(min_size=1, max_size=4).filter(lambda k: k not in parent[key]))] = draw(JSON_VALUES)
    else:
        parent[key] = [parent[key], draw(JSON_VALUES)]
    return doc


def linked_copy(src: Path, dst: Path) -> Path:
    """`src`'s tree at `dst`, files hard-linked (a case costs no copy); `damage_file` replaces a file, never edits it."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def damage_file(path: Path, draw, json_within: tuple | None = None) -> str:
    """Damage one file (a new file in its place, so a hard-linked original is untouched): its bytes, or (a JSON file,
    `json_within` given) its structure under that path. Returns what was done, for the failure message."""
    data = path.read_bytes()
    path.unlink()
    if json_within is not None and draw(st.booleans()):
        doc = mutate_json(json.loads(data), draw, json_within)
        path.write_text(json.dumps(doc), encoding="utf-8")
        return f"{path.name}: structure under {json_within}"
    how = draw(BYTE_DAMAGE)
    event(f"bytes {how[0]}")
    damaged = damage_bytes(data, *how)
    if damaged == data:
        damaged = data + b"\x00"
    path.write_bytes(damaged)
    return f"{path.name}: bytes {how}"


def tree_hash(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `root` (but under `skip`): what a command must leave alone."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (skip is None or skip not in p.parents):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


cli = invoke  # tests/helpers.py: the CLI in process


def clean_outcome(res, what: str, ok_allowed: bool = False) -> int:
    """The command ended in exit 2 with exactly one `error:` line and no traceback (or, `ok_allowed`, exit 0: damage
    that changes nothing the command reads). Returns the exit code."""
    assert res.exit_code in ((0, 2) if ok_allowed else (2,)), (what, res.exit_code, res.output[-800:],
                                                               repr(res.exception))
    if res.exit_code == 2:
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, (what, res.stderr)
    event(f"exit {res.exit_code}")
    return res.exit_code
