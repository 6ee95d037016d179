"""Reading a recipe: the file (size, UTF-8, YAML 1.2 numbers, no key given twice), `--set key.path=value` overrides,
then the schema (compress/recipe/schema.py), every failure one `UserError` line that names the key path, the bad
value and the fix (the CLI turns it into exit code 2).
"""
from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from compress.errors import UserError, did_you_mean, one_line
from compress.recipe.schema import Recipe


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60


def _show(value: Any) -> str:
    """repr() of a user's value, cut short (a YAML alias can make a huge nested list; 0x... a huge int)."""
    try:
        return _SHOW.repr(value)
    except Exception:  # e.g. an int with more digits than Python will print
        return f"<{type(value).__name__}>"


def _path(loc: Sequence[Any]) -> str:
    """Dotted key path; keys that are not plain words (blanks, dots, line breaks, non-text) are quoted."""
    plain = lambda p: isinstance(p, int) or (isinstance(p, str) and p.isprintable() and re.fullmatch(r"[^\s.:'\"]+", p))
    return ".".join(str(p) if plain(p) else _show(p) for p in loc)


_UNION_TAGS = ("ms", "relative")  # search.budget.<tower>'s tagged union (schema.TowerBudget): not keys a user wrote


def _user_loc(loc: Sequence[Any]) -> tuple:
    """The key path as written: without the budget union's tag (search.budget.image.relative.factor -> ...image.factor)."""
    return tuple(p for i, p in enumerate(loc) if not (p in _UNION_TAGS and i >= 2 and loc[i - 2] == "budget"))


def _format_error(err: ValidationError) -> str:
    e = dict(err.errors()[0])
    e["loc"] = _user_loc(e["loc"])
    loc = _path(e["loc"]) or "recipe"
    bad = e.get("input")
    if e["type"] == "extra_forbidden":
        parent = _model_at(Recipe, e["loc"][:-1])
        allowed = sorted(parent.model_fields) if parent else []
        return f"{loc}: unknown key; {did_you_mean(e['loc'][-1], allowed)}"
    if e["type"] == "invalid_key":
        return f"{_path(e['loc'][:-1]) or 'recipe'}: key {_show(bad)} is not a name; keys are text such as 'epochs'"
    if e["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"{loc}: expected a section (a mapping of keys), got {_show(bad)}"
    msg = e["msg"].removeprefix("Value error, ")
    if msg.split(":", 1)[0].startswith(loc) or (not e["loc"] and re.match(r"^[\w.]+: ", msg)):
        return msg  # the message already names its key path (a whole-recipe check names the key it is about)
    if e["type"] in ("literal_error", "enum"):
        return f"{loc}: {_show(bad)} is not allowed; {msg[0].lower() + msg[1:]}"
    shown = f" (got {_show(bad)})" if bad is not None and not isinstance(bad, dict) and _show(bad) not in msg else ""
    if e["type"] in ("int_type", "float_type", "bool_type") and isinstance(bad, str):
        shown += "; write numbers and true/false without quotes"
    return f"{loc}: {msg[0].lower() + msg[1:]}{shown}"


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        found = None if field is None else _section_type(field.annotation)
        if found is None:
            return None
        model = found
    return model


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, also inside Optional / a union / Annotated (search.budget.image: ms or a mapping)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently) and reads
    1e-3 / 1e400 as numbers, as YAML 1.2 does (YAML 1.1 wants 1.0e-3 and reads 1e-3 as text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges are meant to be overridden; unhashable keys: the base class says so
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    a, b = first.start_mark.line + 1, key_node.start_mark.line + 1
                    raise _DuplicateKey(
                        "while constructing a mapping", node.start_mark,
                        f"key {_show(key)} is given twice in one mapping ({f'lines {a} and {b}' if a != b else f'line {a}'})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and re.search("[\ud800-\udfff]", value):  # "\ud800" escapes make these
            raise yaml.constructor.ConstructorError(
                None, None, f"{_show(value)} holds a lone UTF-16 surrogate, which is not text", node.start_mark)
        return value


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str, what: str) -> Any:
    """Parse with RecipeLoader; every failure is a one-line UserError that starts with `what`."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader subclass: no arbitrary objects
    except _DuplicateKey as err:
        raise UserError(f"{what}: {err.problem}; keep one of them") from None
    except yaml.reader.ReaderError as err:
        char = f"#x{err.character:04x}" if isinstance(err.character, int) else _show(err.character)
        raise UserError(f"{what}: character {char} is not allowed in YAML; save it as UTF-8 YAML text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or getattr(err, "context", None)
        raise UserError(one_line(f"{what}: not valid YAML{where}{f' ({problem})' if problem else ''}; fix the syntax")) from None
    except RecursionError:
        raise UserError(f"{what}: nested too deeply to be a recipe; fix the brackets or indentation") from None
    except (ValueError, OverflowError) as err:  # a tagged value that does not convert (!!timestamp 2020-13-45, huge int)
        problem = "a number with thousands of digits" if "integer string conversion" in str(err) else str(err)
        raise UserError(one_line(f"{what}: a value cannot be read ({problem}); fix it or quote it")) from None


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """`--set key.path=value` (value parsed as YAML), applied before validation so errors name the same key path.

    Returns a new dict: the sections on each key path are copied, so a YAML alias shared by two sections (`qat: *s`)
    only changes where the --set points.
    """
    raw = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {_show(item)}: expected key.path=value, e.g. --set align.epochs=2")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p and p == p.strip() for p in parts):
            raise UserError(f"--set {_show(item)}: {_show(key)} is not a key path; expected key.path=value, e.g. --set align.epochs=2")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {_show(item)}: {_show('.'.join(parts[:i + 1]))} is {_show(child)}, not a section")
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = _load_yaml(value, f"--set {_show(item)}: the value") if value != "" else ""
    return raw


def parse_recipe(raw: Any, overrides: Sequence[str] = (), source: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        got = "nothing (the file is empty)" if raw is None else f"{type(raw).__name__} {_show(raw)}"
        raise UserError(f"{source}: expected a mapping of sections (name, data, teacher, ...), got {got}")
    raw = apply_overrides(raw, overrides)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise UserError(one_line(f"{source}: {_format_error(err)}")) from None


MAX_RECIPE_BYTES = 1 << 20


BUILTIN = Path(__file__).resolve().parent / "builtin"  # the recipes that ship with the package (recipes/ links here)


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def resolve_recipe(spec: str | Path) -> Path:
    """A recipe by path, or a shipped one by name (`mobilevit_int8`, `mobilevit_int8.yaml`, `recipes/mobilevit_int8.yaml`
    from any folder): a file that exists wins, so a user's own `recipes/x.yaml` is never shadowed."""
    path = Path(spec)
    if path.is_file():
        return path
    if len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "recipes"):
        shipped = BUILTIN / f"{path.stem if path.suffix in ('.yaml', '.yml') else path.name}.yaml"
        if shipped.is_file():
            return shipped
    return path


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    path = resolve_recipe(path)
    what = f"recipe {str(path)!r}"
    if path.is_dir():
        raise UserError(f"{what} is a directory; pass a YAML file such as recipes/mobilevit_int8.yaml")
    if not path.exists():
        raise UserError(f"{what} not found; pass a YAML file, or the name of a shipped recipe: "
                        f"{', '.join(builtin_recipes())}")
    if not path.is_file():
        raise UserError(f"{what} is not a regular file; pass a YAML file such as recipes/mobilevit_int8.yaml")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise UserError(f"{what} is {size} bytes; a recipe is a small UTF-8 YAML file (at most {MAX_RECIPE_BYTES} bytes)")
        data = path.read_bytes()
    except OSError as err:
        raise UserError(one_line(f"{what} cannot be read ({err.strerror or err}); check its permissions")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise UserError(
            f"{what} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}"
            f"{', it looks like UTF-16' if utf16 else ''}); a recipe must be UTF-8 YAML: save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise UserError(f"{what} contains NUL bytes (UTF-16 or a binary file?); a recipe must be UTF-8 YAML: save it as UTF-8")
    return parse_recipe(_load_yaml(text, what), overrides, source=str(path))
