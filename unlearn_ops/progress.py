"""Progress of long loops, for whoever watches, without unlearn_ops knowing who that is.

A loop (training, unlearning, verification, shadow models) opens a `track(...)` and calls
`advance()` per step and `note()` per epoch or phase. Where that goes is the *reporter*'s business:
by default `note` lines go to the `unlearn_ops` logger and steps go nowhere; the tasks layer
installs one that draws a terminal bar and a Prefect progress artifact (tasks/progress.py), and a
benchmark or test may install its own for a block of code (`reporting_to`). unlearn_ops never
imports prefect: this module is the whole interface.

`advance` is called per optimizer step, so it must cost nothing: it counts, and passes the count on
to the reporter at most `UPDATES_PER_SECOND` times a second (and once at the end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

log = logging.getLogger("unlearn_ops")

UPDATES_PER_SECOND = 4


class Reporter(Protocol):
    """Receives the tracked loops. `start` returns a token the other calls get back; loops nest
    (a retrain's `fit` inside an unlearning attempt), so a reporter may see several at once."""

    def start(self, what: str, total: int | None, unit: str) -> Any: ...

    def update(self, token: Any, completed: int, info: dict[str, Any]) -> None: ...

    def note(self, token: Any, line: str) -> None: ...

    def done(self, token: Any, completed: int) -> None: ...


class LogReporter:
    """The default: one log line per `note` (epoch, phase), no step updates."""

    def start(self, what: str, total: int | None, unit: str) -> str:
        return what

    def update(self, token: Any, completed: int, info: dict[str, Any]) -> None:
        pass

    def note(self, token: Any, line: str) -> None:
        log.info("%s: %s", token, line)

    def done(self, token: Any, completed: int) -> None:
        pass


_default: Reporter = LogReporter()
_current: ContextVar[Reporter | None] = ContextVar("unlearn_ops_progress_reporter", default=None)
_sections: ContextVar[tuple[str, ...]] = ContextVar("unlearn_ops_progress_sections", default=())


def set_default_reporter(reporter: Reporter) -> Reporter:
    """Install `reporter` for the whole process (returns the previous one)."""
    global _default
    previous, _default = _default, reporter
    return previous


def current_reporter() -> Reporter:
    return _current.get() or _default


@contextmanager
def reporting_to(reporter: Reporter) -> Iterator[Reporter]:
    """Report the loops run inside this block (this thread / task context only) to `reporter`."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


@contextmanager
def section(name: str) -> Iterator[None]:
    """Name what the loops inside belong to ("unlearn retrain"): their labels read
    "unlearn retrain › training". Sections nest."""
    token = _sections.set((*_sections.get(), name))
    try:
        yield
    finally:
        _sections.reset(token)


class Tracker:
    """One tracked loop; use it as a context manager (`with track(...) as bar:`)."""

    __slots__ = ("_last", "_reporter", "_token", "completed", "info", "total")

    def __init__(self, what: str, total: int | None, unit: str = "step") -> None:
        self.total, self.completed, self.info = total, 0, {}
        self._reporter = current_reporter()
        self._token = self._reporter.start(" › ".join((*_sections.get(), what)), total, unit)
        self._last = time.monotonic()

    def advance(self, n: int = 1, **info: Any) -> None:
        """`n` more steps done; `info` (epoch, loss, …) is shown beside the bar."""
        self.completed += n
        if info:
            self.info.update(info)
        now = time.monotonic()
        if now - self._last >= 1.0 / UPDATES_PER_SECOND:
            self._last = now
            self._reporter.update(self._token, self.completed, dict(self.info))

    def note(self, line: str) -> None:
        """One line for the log: an epoch's loss, a phase that ended."""
        self._reporter.note(self._token, line)

    def close(self) -> None:
        self._reporter.update(self._token, self.completed, dict(self.info))
        self._reporter.done(self._token, self.completed)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(what: str, total: int | None = None, unit: str = "step") -> Tracker:
    """Start tracking a loop of `total` steps (None: unknown length)."""
    return Tracker(what, total, unit)

