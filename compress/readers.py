"""The one way the toolkit reads a file: every failure becomes a one-line `UserError` naming the file, what is wrong
with it, and what to do (issue 19). A file of unknown origin can be missing, unreadable, cut short, not UTF-8, not
JSON, JSON of the wrong shape, a pickle where safetensors belong, or an image built to exhaust memory; callers pass
`fix`, the sentence that tells the user what to do about *this* file.

tests/test_readers.py greps the code for bare `json.load(s)` on file text, `read_text`, `read_bytes`,
`Image.open`, `safetensors` loads and `Tokenizer.from_file` outside this module (and a short, reasoned allowlist).
"""
from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from compress.errors import UserError, one_line

# Pillow refuses images above this many pixels (DecompressionBombError) instead of allocating them. Set here, not left
# to Pillow's default, so the limit is ours to state: 64 MP is a 8k x 8k photo, far beyond any model input.
MAX_IMAGE_PIXELS = 64_000_000

PathLike = str | os.PathLike


def _why(exn: BaseException) -> str:
    if isinstance(exn, OSError) and exn.strerror:
        return exn.strerror
    return (one_line(exn) or type(exn).__name__)[:160]


def _fail(path: PathLike, what: str, problem: str, fix: str) -> UserError:
    return UserError(f"{what} {str(path)!r}: {problem}; {fix}")


def read_bytes(path: PathLike, what: str, fix: str) -> bytes:
    """The file's bytes; a missing or unreadable file (a folder, no permission, an I/O error) is one line."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _fail(path, what, "not found", fix) from None
    except IsADirectoryError:
        raise _fail(path, what, "is a folder, not a file", fix) from None
    except OSError as exn:
        raise _fail(path, what, f"cannot be read ({_why(exn)})", fix) from None


def decode_text(data: bytes, path: PathLike, what: str, fix: str, encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exn:
        raise _fail(path, what, f"is not {encoding.upper()} text (byte {exn.start})", fix) from None


def read_text(path: PathLike, what: str, fix: str, encoding: str = "utf-8") -> str:
    """The file as text: strict UTF-8 by default (`utf-8-sig` drops a byte-order mark)."""
    return decode_text(read_bytes(path, what, fix), path, what, fix, encoding)


def parse_json(text: str | bytes, path: PathLike, what: str, fix: str, kind: type | None = dict) -> Any:
    """JSON text of a file, checked to be a `kind` (default: an object; None: any value)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exn:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
        where = f" at line {exn.lineno} column {exn.colno}" if isinstance(exn, json.JSONDecodeError) else ""
        raise _fail(path, what, f"is not valid JSON{where}", fix) from None
    if kind is not None and not isinstance(doc, kind):
        raise _fail(path, what, f"holds {_json_kind(type(doc))}, not {_json_kind(kind)}", fix)
    return doc


def _json_kind(kind: type) -> str:
    """A JSON type's name as a user reads it."""
    names = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a number",
             bool: "true or false", type(None): "null"}
    return names.get(kind, kind.__name__)


def read_json(path: PathLike, what: str, fix: str, kind: type | None = dict) -> Any:
    """A JSON file (UTF-8), checked to be a `kind` (default: an object)."""
    return parse_json(read_text(path, what, fix), path, what, fix, kind)


def field(doc: dict, key: str, kind: type | tuple[type, ...], path: PathLike, what: str, fix: str,
          default: Any = ...) -> Any:
    """`doc[key]` checked to be a `kind`; missing (without a default) or of another type: one line naming the key."""
    if key not in doc:
        if default is not ...:
            return default
        raise _fail(path, what, f"has no {key!r}", fix)
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _fail(path, what, f"{key!r} is {_json_kind(type(value))}, not {' or '.join(_json_kind(k) for k in kinds)}",
                    fix)
    return value


def read_jsonl(path: PathLike, what: str, fix: str, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) per non-blank line; a line that is not JSON is one line naming it."""
    for lineno, line in enumerate(read_text(path, what, fix, encoding).splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except (ValueError, RecursionError):  # not JSON, or a number too long to convert
                raise _fail(f"{path}:{lineno}", what, "is not valid JSON", fix) from None


def read_safetensors(path: PathLike, what: str, fix: str) -> dict:
    """The tensors of a .safetensors file (never a pickle: a pickle, a truncated file or junk is one line)."""
    return load_safetensors(read_bytes(path, what, fix), path, what, fix)


def load_safetensors(data: bytes, path: PathLike, what: str, fix: str) -> dict:
    """The tensors of safetensors bytes already read from `path` (named in the error)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exn:
        raise _fail(path, what, f"is not a readable safetensors file ({_why(exn)})", fix) from None


def safetensors_metadata(path: PathLike, what: str, fix: str) -> dict[str, str]:
    """The string metadata of a .safetensors file's header (no tensors read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise _fail(path, what, "not found", fix) from None
    except (OSError, SafetensorError, ValueError, RuntimeError) as exn:
        raise _fail(path, what, f"is not a readable safetensors file ({_why(exn)})", fix) from None


def open_image(source: PathLike | IO[bytes], what: str = "image", fix: str = "replace or remove the image",
               draft: int | None = None, name: PathLike | None = None):
    """A fully decoded PIL image (the file closed), or one line: missing, unreadable, not an image, cut short, or
    beyond MAX_IMAGE_PIXELS. `draft`: a JPEG may decode at a reduced scale that is still at least `draft` px."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS != MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        # once per process (catch_warnings would not be thread-safe): the warning Pillow gives between 1x and 2x its
        # limit is the error it gives above it, before anything prints it
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    shown = name if name is not None else (source if isinstance(source, (str, os.PathLike)) else "<bytes>")
    try:
        with Image.open(source) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:  # Pillow only warns below 2x its limit
                raise Image.DecompressionBombError(f"{img.width * img.height} pixels")
            if draft:
                img.draft("RGB", (draft, draft))
            img.load()
            return img
    except FileNotFoundError:
        raise _fail(shown, what, "not found", fix) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _fail(shown, what, f"has more than {MAX_IMAGE_PIXELS:,} pixels (refused as a decompression bomb)",
                    fix) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exn:
        raise _fail(shown, what, f"is not a readable image ({_why(exn)})", fix) from None


def check_image_header(path: PathLike, what: str = "image", fix: str = "replace or remove the image") -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it: a file that is not an image, is missing, or is
    beyond MAX_IMAGE_PIXELS is one line before a long job starts (damage deeper in the data shows at decode)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            size = img.size
    except FileNotFoundError:
        raise _fail(path, what, "not found", fix) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = (MAX_IMAGE_PIXELS, 2)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exn:
        raise _fail(path, what, f"is not a readable image ({_why(exn)})", fix) from None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _fail(path, what, f"has more than {MAX_IMAGE_PIXELS:,} pixels (refused as a decompression bomb)", fix)
    return size


def claim_outputs(folder: PathLike, names: tuple[str, ...], ours: Callable[[dict], bool], command: str) -> None:
    """Before a command writes `names` into `folder` (its --out): if the folder holds any of them and its first JSON
    name is not this command's own earlier output (`ours(doc)`), refuse in one line: a user's file is never
    overwritten. Names the command does not write are never touched anyway."""
    folder = Path(folder)
    present = [n for n in names if (folder / n).exists()]
    if not present:
        return
    try:
        doc = read_json(folder / names[0], "report", "")
        mine = ours(doc)
    except UserError:
        mine = False
    if not mine:
        raise UserError(f"{command}: {str(folder)!r} already holds {present[0]}, which {command} did not write; pass "
                        "--out a new or empty folder (nothing was written)")


def guarded(what: str, path: PathLike, fix: str, parse: Callable[[], Any],
            errors: tuple[type[BaseException], ...] = (ValueError, KeyError, TypeError)) -> Any:
    """`parse()` with its errors (a library's loader of a file) turned into one line about `path`."""
    try:
        return parse()
    except errors as exn:
        raise _fail(path, what, f"is damaged ({_why(exn)})", fix) from None
