"""Progress on stderr for the long commands (docs/cli.md, "Progress").

The library calls a ``progress(done, total)`` callback once per chunk; this module turns the
calls into what a person or a CI log can use, throttled by time here (the library never is):

* stderr is a terminal: a rich progress bar, shown once the operation has run for
  :data:`BAR_DELAY` seconds (nothing for a fast one) and removed when it ends;
* stderr is not a terminal: one line every ``KFM_PROGRESS_INTERVAL`` seconds (default 5),
  the first only after one interval has passed, e.g.
  ``kfm append: 400.0 of 1,000.0 MB (40%), 82.0 MB/s``;
* ``--quiet``: neither (the library gets no callback at all).

stdout is never written: ``--json`` documents are unaffected.  rich is imported only when a bar
is shown.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import typer

from kfm_ledger.log.progress import Progress

from . import echo

Unit = Literal["bytes", "rows", "percent"]

QuietFlag = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress on stderr (no bar, no progress lines).")
]

#: Seconds between lines when stderr is not a terminal (``KFM_PROGRESS_INTERVAL`` overrides).
DEFAULT_INTERVAL = 5.0
#: Seconds an operation runs before the terminal bar appears.
BAR_DELAY = 1.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("KFM_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _amount(value: float, unit: Unit) -> str:
    return f"{value / 1e6:,.1f}" if unit == "bytes" else f"{value:,.0f}"


def progress_line(label: str, unit: Unit, done: int, total: int, elapsed: float) -> str:
    """``kfm append: 400,000 of 1,000,000 rows (40%), 82,000 rows/s`` (bytes in MB; for
    ``percent``: ``kfm rebuild: 40% after 12 s``)."""
    pct = 100 * done // total if total else 100
    if unit == "percent":
        return f"{label}: {pct}% after {elapsed:,.1f} s"
    name = "MB" if unit == "bytes" else "rows"
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{label}: {_amount(done, unit)} of {_amount(total, unit)} {name} ({pct}%), {_amount(rate, unit)} {name}/s"


class _Lines:
    """One line on stderr every ``interval`` seconds (the first after one interval)."""

    def __init__(self, label: str, unit: Unit, interval: float) -> None:
        self.label, self.unit, self.interval = label, unit, interval
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        echo(progress_line(self.label, self.unit, done, total, now - self.start), err=True)

    def close(self) -> None:
        pass


class _Bar:
    """A rich bar on stderr, started after :data:`BAR_DELAY` seconds, transient."""

    def __init__(self, label: str, unit: Unit, delay: float = BAR_DELAY) -> None:
        self.label, self.unit, self.delay = label, unit, delay
        self.start = time.monotonic()
        self.bar: Any = None
        self.task: Any = None

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
        if self.unit == "bytes":
            columns += [DownloadColumn(binary_units=False), TransferSpeedColumn()]
        elif self.unit == "rows":
            columns += [MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=Console(file=sys.stderr), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=None)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.monotonic() - self.start < self.delay:
                return
            self._show()
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def progress_reporter(command: str, unit: Unit, *, quiet: bool = False) -> Iterator[Progress | None]:
    """The callback to hand the library for ``kfm COMMAND`` (None with ``--quiet``); the bar,
    if one was shown, is removed on exit."""
    if quiet:
        yield None
        return
    label = f"kfm {command}"
    reporter: _Bar | _Lines = _Bar(label, unit) if sys.stderr.isatty() else _Lines(label, unit, _interval())
    try:
        yield reporter
    finally:
        reporter.close()
