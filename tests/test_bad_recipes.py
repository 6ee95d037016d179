"""Bad recipes fail cleanly: every one ends as ONE `error: ...` line on stderr and exit code 2, never a traceback.

Each generated case is the valid recipes/mobilevit_int8.yaml with exactly one injected defect (raw bytes, another
encoding, broken YAML, a key given twice, a wrong type, a number out of range or not finite, an unknown key at any
level, a top level that is not a mapping, odd YAML tags, or the same through `--set`), and states what the error
must be about. `compress.pipeline.run` is replaced by a stub that fails the test, so a case that slipped through
validation can never start training.
"""
from __future__ import annotations

import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from compress.cli import main
from compress.recipe import Recipe, parse_recipe

ROOT = Path(__file__).resolve().parent.parent
BASE_PATH = ROOT / "recipes" / "mobilevit_int8.yaml"
BASE: dict = yaml.safe_load(BASE_PATH.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ the CLI, in process
class _Reached(Exception):
    """The recipe got past validation: the pipeline stub was called."""


@pytest.fixture(scope="module", autouse=True)
def pipeline_stub():
    """`run` imports compress.pipeline.run only after the recipe validated; this stub stands in for it."""
    calls = []

    def run_recipe(recipe, out, resume=False):
        calls.append(recipe)
        raise _Reached(recipe.name)

    stub = types.ModuleType("compress.pipeline.run")
    stub.run_recipe = run_recipe
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "compress.pipeline.run", stub)
        yield calls


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-recipes")


def _invoke(path: Path, overrides: tuple[str, ...] = ()):
    args = ["run", str(path)]
    for item in overrides:
        args += ["--set", item]
    return CliRunner().invoke(main, args)  # click >= 8.2: stderr is always kept apart (result.stderr)


def _fails_cleanly(result) -> str:
    """Exit 2 through SystemExit, exactly one non-empty `error:` line on stderr, no traceback. Returns the line."""
    assert not isinstance(result.exception, _Reached), "an invalid recipe was accepted and the pipeline started"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), repr(result.stderr)
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ the schema's leaves
@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    kind: str  # section, int, float, bool, str, literal, list, other
    optional: bool = False
    values: tuple = ()  # literal: the allowed values
    item: "Leaf | None" = None  # list: what one item is
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    hi_open: bool = False


def _bounds(metadata) -> dict:
    out = {}
    for m in metadata:
        for attr, key, is_open in (("ge", "lo", False), ("gt", "lo", True), ("le", "hi", False), ("lt", "hi", True)):
            if getattr(m, attr, None) is not None:
                out[key], out[key + "_open"] = getattr(m, attr), is_open
    return out


def _leaf(path: tuple[str, ...], ann, metadata=()) -> Leaf:
    optional = False
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in typing.get_args(ann):
        optional = True
        rest = [a for a in typing.get_args(ann) if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    if typing.get_origin(ann) is typing.Annotated:
        ann, *extra = typing.get_args(ann)
        metadata = [*metadata, *(m for e in extra for m in getattr(e, "metadata", [e]))]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return Leaf(path, "section", optional)
    if ann is bool:
        return Leaf(path, "bool", optional)
    if ann in (int, float):
        return Leaf(path, ann.__name__, optional, **_bounds(metadata))
    if ann is str:
        return Leaf(path, "str", optional)
    if typing.get_origin(ann) is typing.Literal:
        return Leaf(path, "literal", optional, values=typing.get_args(ann))
    if typing.get_origin(ann) is list:
        return Leaf(path, "list", optional, item=_leaf(path + ("0",), typing.get_args(ann)[0]))
    return Leaf(path, "other", optional)


def schema_leaves(model: type[BaseModel] = Recipe, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    out = []
    for name, info in model.model_fields.items():
        leaf = _leaf(prefix + (name,), info.annotation, info.metadata)
        out.append(leaf)
        if leaf.kind == "section":
            out += schema_leaves(info.annotation, leaf.path)
    return out


LEAVES = schema_leaves()
SECTIONS = [()] + [leaf.path for leaf in LEAVES if leaf.kind == "section"]
VALUES = [leaf for leaf in LEAVES if leaf.kind not in ("section", "other")]
NUMBERS = [leaf for leaf in VALUES if leaf.kind in ("int", "float")]
BOUNDED_LISTS = [leaf for leaf in VALUES if leaf.kind == "list" and leaf.item.kind in ("int", "float")]


def _model(path: tuple[str, ...]) -> type[BaseModel]:
    model = Recipe
    for part in path:
        model = model.model_fields[part].annotation
    return model


# ------------------------------------------------------------------------------------------------ writing YAML text
class Raw(str):
    """YAML text written as it is (tags, anchors, .inf)."""


class DupKey:
    """A second occurrence of a key in one mapping (a dict cannot hold it twice)."""

    def __init__(self, name: str, quoted: bool):
        self.name, self.quoted = name, quoted


def _scalar(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        text = repr(v)  # exact round trip; PyYAML (YAML 1.1) reads 1e-05 as text, 1.0e-05 as a number
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    if isinstance(v, (list, dict)) and v:
        return "[" + ", ".join(_scalar(x) for x in v) + "]" if isinstance(v, list) else \
               "{" + ", ".join(f"{_key(k)}: {_scalar(x)}" for k, x in v.items()) + "}"
    return _quote(v) if isinstance(v, str) else json.dumps(v)


def _quote(s: str) -> str:
    """A YAML double-quoted scalar: printable ASCII as is, everything else escaped (\\U for astral characters)."""
    def esc(c: str) -> str:
        if " " <= c <= "~" and c not in '"\\':
            return c
        n = ord(c)
        return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
    return '"' + "".join(esc(c) for c in s) + '"'


def _key(k) -> str:
    if isinstance(k, DupKey):
        return _quote(k.name) if k.quoted else k.name
    if isinstance(k, Raw):
        return str(k)
    return k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) else _quote(k)


def emit(d: dict, indent: int = 0) -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict) and v and not isinstance(k, Raw):
            lines.append(" " * indent + f"{_key(k)}:")
            lines += emit(v, indent + 2)
        else:
            lines.append(" " * indent + f"{_key(k)}: {_scalar(v)}")
    return lines


def to_yaml(d: dict) -> str:
    return "\n".join(emit(d)) + "\n"


def _base() -> dict:
    return json.loads(json.dumps(BASE))  # a deep copy


def _at(d: dict, path: tuple[str, ...]) -> dict:
    for part in path:
        d = d.setdefault(part, {})
    return d


def _insert(d: dict, key, value, index: int) -> None:
    items = list(d.items())
    items.insert(index % (len(items) + 1), (key, value))
    d.clear()
    d.update(items)


@dataclass
class Case:
    what: str
    data: bytes
    overrides: tuple[str, ...] = ()
    expect: str = ""  # a regex the error line must match
    defect: str = ""  # which strategy made it (reported with --hypothesis-show-statistics)


# ------------------------------------------------------------------------------------------------ defects
@st.composite
def raw_bytes(draw):
    text = to_yaml(_base()).encode()
    junk = draw(st.binary(min_size=1, max_size=24))
    at = draw(st.integers(0, len(text)))
    data = text[:at] + junk + text[at:]
    try:
        data.decode("utf-8")
        data = text[:at] + b"\x80" + junk + text[at:]  # a lone continuation byte: never UTF-8
    except UnicodeDecodeError:
        pass
    return Case("raw bytes", data, expect="not UTF-8|NUL")


PHRASES = {
    "gbk": "中文注释：学习率与批大小", "gb18030": "蒸馏双语模型", "big5": "繁體中文註解", "shift_jis": "日本語のコメント",
    "euc-kr": "한국어 설명", "latin-1": "café déjà vu ±½ naïve", "cp1252": "“smart quotes” – €", "utf-16": "双语 bilingual",
    "utf-16-le": "双语 bilingual", "utf-16-be": "双语 bilingual", "utf-32": "双语",
}


@st.composite
def other_encoding(draw):
    codec = draw(st.sampled_from(sorted(PHRASES)))
    phrase = PHRASES[codec]
    words = draw(st.lists(st.sampled_from(phrase), max_size=12))
    words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from([c for c in phrase if ord(c) > 127])))
    lines = emit(_base())
    lines.insert(draw(st.integers(0, len(lines))), "# " + "".join(words))
    data = ("\n".join(lines) + "\n").encode(codec)
    try:
        decodes = "\x00" not in data.decode("utf-8")
    except UnicodeDecodeError:
        decodes = False
    if decodes:  # rare for gbk & co: these bytes happen to be UTF-8; make them not
        data = data + "# é\n".encode("latin-1")
    return Case(f"{codec} text", data, expect="not UTF-8|NUL")


BROKEN = ["\tkey: 1", "key: value: other", "key: [1, 2]]", "@reserved: 1", "`tick: 1", "key: 'unterminated",
          "key: {a: 1}}", ": : :", "key: [1, 2", "key: {a: 1", "---\nname: x\n---", "key: *undefined_alias",
          "key: !custom 5", "key: !!python/object/apply:os.system ['true']", "? [a]\n: 1\n? [a]\n: 2"]


@st.composite
def broken_yaml(draw):
    lines = emit(_base())
    at = draw(st.integers(0, len(lines)))
    frag = draw(st.sampled_from(BROKEN))
    indent = " " * (len(lines[at]) - len(lines[at].lstrip())) if at < len(lines) else ""
    lines.insert(at, indent + frag.replace("\n", "\n" + indent))
    return Case("broken YAML", ("\n".join(lines) + "\n").encode(), expect="not valid YAML|given twice")


@st.composite
def garbage_text(draw):
    """Text without letters: never has a `name`, whatever YAML makes of it."""
    text = draw(st.text(alphabet="[]{}:,-?|>'\"&*!%@` #\t\n0123456789.", max_size=60))
    return Case("garbage text", text.encode(), expect="")


@st.composite
def duplicate_key(draw):
    d = _base()
    path = draw(st.sampled_from([p for p in SECTIONS if isinstance(_get(d, p), dict) and _get(d, p)]))
    section = _at(d, path)
    key = draw(st.sampled_from(sorted(section)))
    _insert(section, DupKey(key, draw(st.booleans())), section[key], draw(st.integers(0, 50)))
    return Case(f"{'.'.join(path + (key,))} given twice", to_yaml(d).encode(), expect="given twice")


def _get(d, path):
    for part in path:
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


DATE, STAMP, BINARY = Raw("2024-05-01"), Raw("2024-05-01 12:00:00"), Raw("!!binary aGVsbG8=")
SET, OMAP = Raw("!!set {a: null}"), Raw("!!omap [a: 1]")
LOL = Raw("[&a [1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b], "
          "&d [*c, *c, *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d], [*e, *e, *e, *e, *e, *e, *e, *e]]")
RECURSIVE = Raw("&r [*r, 1]")
ODD = [DATE, STAMP, BINARY, SET, OMAP, LOL, RECURSIVE]
WRONG = {
    "int": ["5", "12", True, False, 2.5, 3.0, Raw("!!float 3"), [1], {"a": 1}, Raw("!!str 5"), Raw("1e3"), *ODD],
    "float": ["0.5", "1e-3", "0x1f", True, False, [0.5], {"a": 0.5}, Raw("!!str 0.5"), *ODD],
    "bool": [1, 0, "true", "yes", 1.5, [True], {"a": True}, Raw("!!str true"), *ODD],
    "str": [5, 2.5, True, [], ["a"], {"a": "b"}, Raw("!!int '5'"), *ODD],
    "literal": [1, 2.5, True, "nosuch", [], ["x"], {"a": "b"}, *ODD],
    "list": ["fp32", 1, 2.5, True, {"a": 1}, [None], [[1]], [{"a": 1}], OMAP, SET, RECURSIVE],
    "section": [1, 2.5, "text", True, [], [1, 2], DATE, BINARY, LOL, Raw("!!omap [a: 1]")],
}


@st.composite
def wrong_type(draw):
    leaf = draw(st.sampled_from([leaf for leaf in LEAVES if leaf.kind in WRONG]))
    choices = list(WRONG[leaf.kind])
    if not leaf.optional:
        choices.append(None)
    if leaf.kind == "list" and leaf.item.kind in ("int", "float"):
        choices += [["1"], [True], [1.5] if leaf.item.kind == "int" else ["x"]]
    if leaf.kind == "list" and leaf.item.kind == "literal":
        choices += [[1], [True], ["nosuch"]]
    value = draw(st.sampled_from(choices))
    d = _base()
    _at(d, leaf.path[:-1])[leaf.path[-1]] = value
    return Case(f"{'.'.join(leaf.path)} = {_scalar(value)[:40]}", to_yaml(d).encode(), expect=re.escape(".".join(leaf.path)))


def _outside(draw, leaf: Leaf, kind: str):
    sides = [s for s, b in (("lo", leaf.lo), ("hi", leaf.hi)) if b is not None]
    side = draw(st.sampled_from(sides))
    if kind == "int":
        far = draw(st.one_of(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 10**30)))
        return (leaf.lo - 1 - far) if side == "lo" else (leaf.hi + 1 + far)
    if side == "lo":
        v = draw(st.floats(min_value=-1e300, max_value=leaf.lo, exclude_max=not leaf.lo_open, allow_nan=False))
        assert v < leaf.lo or (leaf.lo_open and v <= leaf.lo)
    else:
        v = draw(st.floats(min_value=leaf.hi, max_value=1e300, exclude_min=not leaf.hi_open, allow_nan=False))
        assert v > leaf.hi or (leaf.hi_open and v >= leaf.hi)
    return v


@st.composite
def out_of_range(draw):
    d = _base()
    leaf = draw(st.sampled_from(NUMBERS + BOUNDED_LISTS))
    if leaf.kind == "list":
        item = leaf.item
        value = [_outside(draw, item, item.kind)]
    else:
        value = _outside(draw, leaf, leaf.kind)
        if leaf.kind == "float" and draw(st.booleans()) and float(value).is_integer() and abs(value) < 1e15:
            value = int(value)  # a YAML int for a float field: fine as a type, still out of range
    _at(d, leaf.path[:-1])[leaf.path[-1]] = value
    return Case(f"{'.'.join(leaf.path)} = {value!r}"[:80], to_yaml(d).encode(), expect=re.escape(".".join(leaf.path)) + r".*(greater|less)")


NON_FINITE = [".inf", "-.inf", "+.inf", ".Inf", ".INF", ".nan", ".NaN", "1e400", "-1e400", "1.0e+400", "2E999", "-1.5e309"]


@st.composite
def non_finite(draw):
    d = _base()
    leaf = draw(st.sampled_from(NUMBERS + BOUNDED_LISTS))
    text = Raw(draw(st.sampled_from(NON_FINITE)))
    _at(d, leaf.path[:-1])[leaf.path[-1]] = Raw(f"[{text}]") if leaf.kind == "list" else text
    kind = leaf.item.kind if leaf.kind == "list" else leaf.kind
    return Case(f"{'.'.join(leaf.path)} = {text}", to_yaml(d).encode(),
                expect=re.escape(".".join(leaf.path)) + (r".*finite" if kind == "float" else r".*integer"))


RAW_KEYS = [Raw(k) for k in ("1", "3.5", "true", "null", "~", "2024-05-01", "[a, b]", "{a: 1}", "!!binary aGk=")]


def _unknown_key_name(draw, path):
    allowed = set(_model(path).model_fields)
    typo = st.sampled_from(sorted(allowed)).flatmap(
        lambda k: st.integers(0, len(k)).map(lambda i: k[:i] + "x" + k[i + 1:]))
    return draw(st.one_of(typo, st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True), st.text(min_size=1, max_size=12),
                          st.sampled_from(RAW_KEYS)).filter(lambda k: isinstance(k, Raw) or k not in allowed))


@st.composite
def unknown_key(draw):
    d = _base()
    path = draw(st.sampled_from(SECTIONS))
    key = _unknown_key_name(draw, path)
    value = draw(st.sampled_from([1, 0.5, "x", True, None, [1], {"a": 1}]))
    _insert(_at(d, path), key, value, draw(st.integers(0, 50)))
    where = re.escape(".".join(path)) if path else ""
    return Case(f"unknown key {key!r} in {'.'.join(path) or 'top level'}", to_yaml(d).encode(),
                expect=rf"{where}.*(unknown key|not a name)|not valid YAML")


NOT_MAPPING = ["", "\n", "# only a comment\n", "null\n", "~\n", "42\n", "1.5\n", "true\n", "just text\n", "- a\n- b\n",
               "[]\n", "!!binary aGk=\n", "2024-05-01\n", '"name: x"\n']


@st.composite
def not_a_mapping(draw):
    text = draw(st.sampled_from(NOT_MAPPING + ["- " + to_yaml(_base()).replace("\n", "\n  ")]))
    return Case("top level not a mapping", text.encode(), expect="expected a mapping")


# --set: the base file stays valid; the override carries the defect.
BROKEN_VALUES = ["[1, 2", "{a: 1", "'x", '"x', "a: b: c", "*nope", "!custom 1", "@x", "`x", "[1]]", "{lr: 1, lr: 2}",
                 "!!int abc", "!!timestamp 2024-13-45"]


@st.composite
def bad_override(draw):
    kind = draw(st.sampled_from(["value", "unknown", "section", "subpath", "broken", "malformed"]))
    if kind == "value":
        leaf = draw(st.sampled_from(NUMBERS + [leaf for leaf in LEAVES if leaf.kind in WRONG]))
        pick = draw(st.sampled_from(["type", "range", "inf"] if leaf.kind in ("int", "float") else ["type"]))
        if pick == "type":
            value = _scalar(draw(st.sampled_from(WRONG[leaf.kind] + ([] if leaf.optional else [None]))))
        elif pick == "range":
            value = _scalar(_outside(draw, leaf, leaf.kind))
        else:
            value = draw(st.sampled_from(NON_FINITE))
        return Case(f"--set {leaf.path}", b"", (".".join(leaf.path) + "=" + value,), expect=re.escape(".".join(leaf.path)))
    if kind == "unknown":
        path = draw(st.sampled_from(SECTIONS))
        key = draw(st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True).filter(lambda k: k not in _model(path).model_fields))
        deeper = draw(st.sampled_from(["", ".key", ".a.b"]))
        return Case("--set unknown key", b"", (".".join(path + (key,)) + deeper + "=1",), expect="unknown key")
    if kind == "section":
        path = draw(st.sampled_from(SECTIONS[1:]))
        value = _scalar(draw(st.sampled_from(WRONG["section"] + [None])))
        return Case("--set section", b"", (".".join(path) + "=" + value,), expect=re.escape(".".join(path)))
    if kind == "subpath":
        leaf = draw(st.sampled_from([leaf for leaf in LEAVES if leaf.kind in WRONG and leaf.kind != "section"]))
        return Case("--set below a value", b"", (".".join(leaf.path) + ".x=1",), expect=re.escape(".".join(leaf.path)))
    if kind == "broken":
        leaf = draw(st.sampled_from(VALUES))
        value = draw(st.sampled_from(BROKEN_VALUES))
        return Case("--set broken value", b"", (".".join(leaf.path) + "=" + value,),
                    expect=r"the value: (not valid YAML|key .* given twice|a value cannot be read)")
    item = draw(st.sampled_from(["align.epochs", "align", "align..lr=1", ".lr=1", "=1", "align.=2", " =3", "align. .lr=1"]))
    return Case("--set malformed", b"", (item,), expect=r"--set .*(expected key\.path=value|not a key path)")


DEFECTS = [raw_bytes, other_encoding, broken_yaml, garbage_text, duplicate_key, wrong_type, out_of_range, non_finite,
           unknown_key, not_a_mapping, bad_override]
ANY_CASE = st.one_of([make().map(lambda case, name=make.__name__: setattr(case, "defect", name) or case) for make in DEFECTS])


# ------------------------------------------------------------------------------------------------ tests
def test_base_recipe_is_valid_and_every_number_is_bounded():
    """The cases are only bad because of their one defect; and every number in the schema has both bounds."""
    parse_recipe(_base())
    parse_recipe(yaml.safe_load(to_yaml(_base())))
    unbounded = [".".join(leaf.path) for leaf in NUMBERS + [b.item for b in BOUNDED_LISTS] if leaf.lo is None or leaf.hi is None]
    assert not unbounded, f"give these fields Field(ge=..., le=...): {unbounded}"
    assert len(SECTIONS) > 8 and len(NUMBERS) > 30


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=ANY_CASE)
def test_bad_recipe_fails_cleanly(case, workdir):
    path = workdir / "recipe.yaml"
    if case.overrides and not case.data:
        path.write_text(to_yaml(_base()), encoding="utf-8")
    else:
        path.write_bytes(case.data)
    event(case.defect)
    line = _fails_cleanly(_invoke(path, case.overrides))
    assert re.search(case.expect, line), (case.what, line)


def test_shipped_recipes_reach_the_pipeline(pipeline_stub):
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        result = _invoke(path, ("align.lr=1e-3", "seed=7"))
        assert isinstance(result.exception, _Reached), (path.name, result.stderr, result.exception)
        assert pipeline_stub[-1].name == path.stem and pipeline_stub[-1].align.lr == 1e-3 and pipeline_stub[-1].seed == 7


def test_gbk_recipe_says_it_must_be_utf8(workdir):
    """User report: a recipe saved as GBK ended in a UnicodeDecodeError traceback."""
    path = workdir / "gbk.yaml"
    path.write_bytes(("# 中文注释\n" + BASE_PATH.read_text(encoding="utf-8")).encode("gbk"))
    line = _fails_cleanly(_invoke(path))
    assert str(path) in line and "not UTF-8" in line and "save it as UTF-8" in line


def test_utf16_recipe_says_it_must_be_utf8(workdir):
    path = workdir / "utf16.yaml"
    path.write_bytes(BASE_PATH.read_text(encoding="utf-8").encode("utf-16"))
    assert "looks like UTF-16" in _fails_cleanly(_invoke(path))
    path.write_bytes(BASE_PATH.read_text(encoding="utf-8").encode("utf-16-le"))  # no BOM: ASCII + NUL bytes
    assert "NUL" in _fails_cleanly(_invoke(path))


def test_lr_1e400_is_not_finite(workdir):
    """User report: `lr: 1e400` (YAML's infinity) was accepted and training started."""
    path = workdir / "inf.yaml"
    path.write_text(BASE_PATH.read_text(encoding="utf-8").replace("  lr: 2.0e-3", "  lr: 1e400"), encoding="utf-8")
    assert "distill.lr: input should be a finite number" in _fails_cleanly(_invoke(path))
    assert "align.lr: input should be a finite number" in _fails_cleanly(_invoke(BASE_PATH, ("align.lr=.inf",)))
    assert "align.lr: input should be a finite number" in _fails_cleanly(_invoke(BASE_PATH, ("align.lr=1e400",)))


def test_directory_and_unreadable_file(workdir, monkeypatch):
    assert "is a directory" in _fails_cleanly(_invoke(workdir))

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    line = _fails_cleanly(_invoke(BASE_PATH))
    assert "cannot be read (Permission denied)" in line and "mobilevit_int8.yaml" in line


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root reads anything")
def test_file_without_read_permission(workdir):
    path = workdir / "secret.yaml"
    path.write_text(BASE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    path.chmod(0)
    try:
        assert "cannot be read" in _fails_cleanly(_invoke(path))
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("override, expected", [
    ("export.target=xnpack", "export.target: 'xnpack' is not a known target; did you mean 'xnnpack'?"),
    ("export.npu=[ethosu55]", "export.npu.0: 'ethosu55' is not a known NPU target; did you mean 'ethos-u55'?"),
    ("export.npu=[qnn]", "export.npu.0: 'qnn' is a target but not an int8 NPU; known: ethos-u55, ethos-u85"),
    ("qat.scheme=8da4", "qat.scheme: '8da4' is not a known quantization scheme; did you mean '8da4w'?"),
    ("qat.compare=[ptq-int9]", "qat.compare.0: 'ptq-int9' is not a known quantization scheme; did you mean 'ptq-int8'?"),
    ("students.image.arch=fastvit_t9", "students.image.arch: 'fastvit_t9' is not a known student; did you mean 'fastvit_t8'?"),
    ("search.device=abd", "search.device: 'abd' is not a known search device; did you mean 'adb'?"),
])
def test_unknown_names_stop_the_run_before_training(override, expected):
    """Every name in a recipe (target, NPU, scheme, arch, device) is checked when it loads, not after training."""
    line = _fails_cleanly(_invoke(BASE_PATH, (override,)))
    assert line == f"error: {BASE_PATH}: {expected}", line
