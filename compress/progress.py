"""Rich progress bars for long work; quiet when not attached to a terminal so CI logs stay readable."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0) -> Iterator:
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not sys.stderr.isatty()) as prog:
        task = prog.add_task(description, total=total, completed=completed, info="")

        def advance(info: str = "") -> None:
            prog.update(task, advance=1, info=info)

        yield advance
    if not sys.stderr.isatty():
        console.print(f"{description}: done ({total} steps)")


def log_epoch(description: str, epoch: int, epochs: int, loss: float, seconds: float) -> None:
    """One line per epoch: the record that survives in CI logs and non-interactive runs."""
    console.print(f"{description}: epoch {epoch}/{epochs} loss {loss:.4f} ({seconds:.0f}s)")


def log(message: str) -> None:
    console.print(message)
