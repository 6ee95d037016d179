"""Where dcclip-compress keeps what it makes: one home for `.cache/` (the trained reference teacher, renders, the
latency table, shard indexes) and `runs/`, so that a second working folder reuses the 17-minute teacher.

`DCCLIP_HOME` when set; else the source checkout the package runs from (an editable install: `make run` and
`make test` keep using the checkout's `.cache/` and `runs/`, as before); else `~/.cache/dcclip-compress`.
Paths a user types (`--out`, a recipe's `data.shards`) stay relative to the working folder; only defaults live here.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "DCCLIP_HOME"


def checkout() -> Path | None:
    """The source checkout this package is imported from, or None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    try:
        return root if 'name = "dcclip-compress"' in pyproject.read_text(encoding="utf-8") else None
    except OSError:
        return None


def home() -> Path:
    env = os.environ.get(ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return checkout() or Path.home() / ".cache" / "dcclip-compress"


def cache_dir(*parts: str) -> Path:
    """`<home>/.cache/<parts>`."""
    return home().joinpath(".cache", *parts)


def runs_dir(*parts: str) -> Path:
    """`<home>/runs/<parts>`: where a run, a search, an eval or a bench report goes when no --out is given."""
    return home().joinpath("runs", *parts)


def under_home(path: str | os.PathLike) -> Path:
    """A recipe's cache path under `.cache/` (the default `.cache/emoji`) goes under the home; any other path, as
    typed, stays relative to the working folder."""
    path = Path(path).expanduser()
    return home() / path if not path.is_absolute() and path.parts[:1] == (".cache",) else path
