"""Rich progress bars for long work; quiet when not attached to a terminal so CI logs stay readable.

Off a terminal (a log file, CI), every line is printed whole (no wrapping at 80 columns) and long work reports its
throughput and ETA in plain lines instead of a bar: one per epoch (`log_epoch`), one at least every
`HEARTBEAT_S` seconds inside a long stretch, and one when it ends.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
HEARTBEAT_S = 60.0  # off a terminal: a progress line at least this often while a bar would be moving


def _line(text: str) -> None:
    """One log line, written whole (soft wrap): the terminal or the reader of a log file wraps it, never rich at the
    80 columns it assumes off a terminal. (Not the console's default: the live bar keeps rich's own layout.)"""
    console.print(text, soft_wrap=True)


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: an ETA or elapsed time for a log line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(n: float, seconds: float, unit: str) -> str:
    per_s = n / max(seconds, 1e-9)
    return f"{per_s:.2f} {unit}/s" if per_s < 10 else f"{per_s:.0f} {unit}/s"


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0) -> Iterator:
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    tty = sys.stderr.isatty()
    clock = {"start": time.perf_counter(), "last": time.perf_counter(), "done": completed}
    with Progress(*columns, console=console, transient=False, disable=not tty) as prog:
        task = prog.add_task(description, total=total, completed=completed, info="")

        def advance(info: str = "") -> None:
            prog.update(task, advance=1, info=info)
            clock["done"] += 1
            now = time.perf_counter()
            if not tty and now - clock["last"] >= HEARTBEAT_S and clock["done"] < total:
                clock["last"] = now
                n, secs = clock["done"] - completed, now - clock["start"]
                eta = (total - clock["done"]) * secs / max(n, 1)
                _line(f"{description}: step {clock['done']}/{total} · {_rate(n, secs, 'steps')} · "
                              f"ETA {duration(eta)}" + (f" · {info}" if info else ""))

        yield advance
    if not tty:
        n, secs = clock["done"] - completed, time.perf_counter() - clock["start"]
        resumed = f"; {n} after resuming" if completed else ""
        _line(f"{description}: done ({total} steps{resumed}, {duration(secs)}, {_rate(n, secs, 'steps')})")


def log_epoch(description: str, epoch: int, epochs: int, loss: float, seconds: float, steps: int | None = None,
              samples: int | None = None, epoch_seconds: float | None = None) -> None:
    """One line per epoch: the record that survives in CI logs and non-interactive runs. `seconds` is the stage's
    time so far (all epochs, resumed ones included); with this epoch's `steps`, `samples` and `epoch_seconds` the
    line adds its throughput, and the stage's ETA (its mean epoch time times the epochs left)."""
    line = f"{description}: epoch {epoch}/{epochs} loss {loss:.4f} ({seconds:.0f}s)"
    if epoch_seconds:
        if steps:
            line += f" · {_rate(steps, epoch_seconds, 'steps')}"
        if samples:
            line += f" · {_rate(samples, epoch_seconds, 'samples')}"
    if epoch < epochs:
        line += f" · ETA {duration(seconds / max(epoch, 1) * (epochs - epoch))}"
    _line(line)


def log(message: str) -> None:
    _line(message)
