"""Progress of a long step of a ``sentinel`` command: the one helper every command uses.

On a terminal (stderr, where the bar is drawn) with rich installed, a rich progress bar that is
gone when the step ends (``transient``); what the command prints meanwhile appears above it, never
through it (stdout on the same terminal is passed through the bar's console; stdout piped elsewhere
is left alone). Otherwise (a pipe, a log file, a service's journal, no rich) no control characters at
all: plain lines through ``plain``, at most one every ``plain_every_s`` (``plain=None``: nothing).
rich is imported only when a bar is drawn.

    with Progress("history", total=n, plain=print) as progress:
        for done in work():
            progress(done)            # or progress(done, total, detail="...")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress", "draws_bars"]


def draws_bars(stream: TextIO | None = None) -> bool:
    """Whether :class:`Progress` would draw a bar on ``stream`` (default stderr): a terminal and rich."""
    stream = stream if stream is not None else sys.stderr
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    """Whether both streams are terminals. Then what is printed on stdout is passed through the
    bar's console (drawn above the bar); stdout piped elsewhere is left alone (nothing to garble,
    and its lines must reach the pipe)."""
    try:
        return a.isatty() and b.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar over ``total`` (``unit`` after the numbers), or plain lines; a context manager
    and a ``callback(done, total=None, detail="")``, the shape library functions take as ``progress``."""

    def __init__(self, label: str, *, total: float | None = None, unit: str = "", enabled: bool = True,
                 plain: Callable[[str], object] | None = None, plain_every_s: float = 10.0,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.plain, self.plain_every_s = plain, plain_every_s
        self.done = 0.0
        self._bar: Any = None
        self._task: Any = None
        self._last_plain = time.monotonic()
        stream = stream if stream is not None else sys.stderr
        if enabled and draws_bars(stream):
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TaskProgressColumn, TextColumn, \
                TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.fields[numbers]}"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[detail]}"), console=Console(file=stream),
                                     transient=True, redirect_stdout=_same_terminal(sys.stdout, stream))
        elif not enabled:
            self.plain = None

    @property
    def drawing(self) -> bool:
        """True while a bar is drawn (then the plain lines are not written)."""
        return self._bar is not None

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, numbers="", detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def __call__(self, done: float, total: float | None = None, detail: str = "") -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total, numbers=self._numbers(), detail=detail)
            return
        now = time.monotonic()
        if self.plain is not None and now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.plain(self.line(detail))

    def line(self, detail: str = "") -> str:
        """The plain line for the current state: ``label 120/600 s (20 %): detail``."""
        text = f"{self.label} {self._numbers()}"
        if self.total:
            text += f" ({100.0 * self.done / self.total:.0f} %)"
        return f"{text}: {detail}" if detail else text

    def _numbers(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.done:,.0f}{unit}"
        return f"{self.done:,.0f}/{self.total:,.0f}{unit}"
