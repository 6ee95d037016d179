"""Small helpers the test files share: the CLI in process, its one-line error contract, and a per-test home."""
from __future__ import annotations

import contextlib
import os

from click.testing import CliRunner

from compress.cli import main


def invoke(args: list[str]):
    """`dcclip-compress ARGS` in this process (click's runner: stdout and stderr apart)."""
    return CliRunner().invoke(main, args)


def one_line_exit_2(args: list[str]) -> str:
    """The command exits 2 with exactly one line on stderr and no traceback; returns that line."""
    res = invoke(args)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


@contextlib.contextmanager
def home_at(folder):
    """DCCLIP_HOME set to `folder` inside the block: a test's `.cache/` and `runs/` go under its own folder."""
    old = os.environ.get("DCCLIP_HOME")
    os.environ["DCCLIP_HOME"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DCCLIP_HOME", None)
        else:
            os.environ["DCCLIP_HOME"] = old
