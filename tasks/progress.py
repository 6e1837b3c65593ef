"""Where a person waiting sees the pipeline's long steps: a terminal bar and a Prefect progress artifact.

unlearn_ops loops report through `unlearn_ops.progress` (it cannot import prefect); `install()`
makes `PipelineReporter` the process's reporter. What it shows, by `UNLEARN_PROGRESS`:

- `auto` (default): bars (rich) when stderr is a terminal, else a plain line per loop at most every
  `LINE_EVERY_S`; nothing but the log lines when `CI` is set. Inside a Prefect task or flow run,
  a progress artifact per outermost loop longer than `ARTIFACT_AFTER_S` (the run's Artifacts tab).
- `bar`, `lines`: that display, whatever the terminal; `off`: neither display nor artifacts.

Every loop's `note` lines (one per epoch or phase) go to the Prefect run logger inside a run (the
UI's logs) and to the `unlearn_ops` logger outside one. Nothing here may break a training: a failed
artifact call is logged once and that loop's artifact given up.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from unlearn_ops import progress

log = logging.getLogger("unlearn_ops")

MODES = ("auto", "bar", "lines", "off")
LINE_EVERY_S = 10.0      # plain-line mode: one line per loop at most this often
ARTIFACT_AFTER_S = 2.0   # loops shorter than this leave no artifact (tests, tiny models)
ARTIFACT_EVERY_S = 5.0   # an artifact update is an API call: at most this often per loop
BAR_AFTER_S = 0.5        # no bar flashes for loops shorter than this


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def resolve_mode(mode: str | None = None, stream: Any = None) -> str:
    """`auto` → `off` in CI, `bar` on a terminal, `lines` otherwise."""
    mode = (mode or os.environ.get("UNLEARN_PROGRESS") or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"UNLEARN_PROGRESS={mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if in_ci():
        return "off"
    stream = stream if stream is not None else sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def run_context() -> bool:
    """Inside a Prefect task or flow run (where an artifact has a run to belong to)."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:
        return False
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class Loop:
    """One tracked loop as the reporter sees it."""

    label: str                      # "unlearn retrain › training": its sections' names too
    total: int | None
    unit: str
    in_run: bool
    started: float = field(default_factory=time.monotonic)
    completed: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    bar_id: Any = None              # rich task id, once shown
    artifact: UUID | None = None
    artifact_at: float = 0.0
    line_at: float = 0.0
    artifact_failed: bool = False

    def percent(self) -> float | None:
        return None if not self.total else min(100.0, 100.0 * self.completed / self.total)

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if not self.total or not self.completed:
            return None
        return elapsed * (self.total - self.completed) / self.completed

    def status(self) -> str:
        """'120/420 steps (29 %), epoch 1/3, loss 0.41, 35s elapsed, ETA 1m27s'."""
        done = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        parts = [f"{done} {self.unit}s" + (f" ({self.percent():.0f} %)" if self.total else "")]
        parts += [f"{k} {v}" for k, v in self.info.items()]
        parts.append(f"{fmt_seconds(time.monotonic() - self.started)} elapsed")
        eta = self.eta()
        if eta is not None and self.completed < (self.total or 0):
            parts.append(f"ETA {fmt_seconds(eta)}")
        return ", ".join(parts)


class PipelineReporter:
    """`unlearn_ops.progress.Reporter` for the pipeline: terminal display + Prefect artifacts."""

    def __init__(self, mode: str | None = None, stream: Any = None, artifacts: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.artifacts = (self.mode != "off") if artifacts is None else artifacts
        self._lock = threading.RLock()
        self._local = threading.local()   # per thread: how many loops are open (nesting)
        self._live: Any = None            # rich Progress while any bar is shown
        self._console_swaps: list[tuple[Any, Any]] = []

    # ----------------------------------------------------------------- the Reporter protocol
    def start(self, what: str, total: int | None, unit: str) -> Loop:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        # one artifact per outermost loop (a retrain's epochs, a verification's phases), not one
        # per prediction pass inside it
        return Loop(label=what, total=total, unit=unit, in_run=depth == 0 and self.artifacts and run_context())

    def update(self, loop: Loop, completed: int, info: dict[str, Any]) -> None:
        loop.completed, loop.info = completed, info
        now = time.monotonic()
        if self.mode == "bar" and now - loop.started >= BAR_AFTER_S:
            self._show_bar(loop)
        elif self.mode == "lines" and now - loop.line_at >= LINE_EVERY_S and now - loop.started >= LINE_EVERY_S:
            loop.line_at = now
            # written, not print()ed: a flow with log_prints would copy every line into the run's logs
            self.stream.write(f"[progress] {loop.label}: {loop.status()}\n")
            self.stream.flush()
        if loop.in_run and not loop.artifact_failed and now - loop.started >= ARTIFACT_AFTER_S \
                and now - loop.artifact_at >= ARTIFACT_EVERY_S:
            loop.artifact_at = now
            self._artifact(loop)

    def note(self, loop: Loop, line: str) -> None:
        message = f"{loop.label}: {line}"
        if loop.in_run or (self.artifacts and run_context()):
            try:
                from prefect.logging import get_run_logger

                get_run_logger().info(message)
                return
            except Exception:  # noqa: BLE001 - no run logger here after all: use ours
                pass
        log.info(message)

    def done(self, loop: Loop, completed: int) -> None:
        loop.completed = completed
        self._local.depth = max(getattr(self._local, "depth", 1) - 1, 0)
        if loop.artifact is not None:
            self._artifact(loop, final=True)
        with self._lock:
            if self._live is not None and loop.bar_id is not None:
                self._live.remove_task(loop.bar_id)
                if not self._live.tasks:
                    self._stop_live()

    # ----------------------------------------------------------------- displays
    def _show_bar(self, loop: Loop) -> None:
        with self._lock:
            if self._live is None:
                self._start_live()
            info = "  ".join(f"{k} {v}" for k, v in loop.info.items())
            if loop.bar_id is None:
                loop.bar_id = self._live.add_task(loop.label, total=loop.total, completed=loop.completed,
                                                  unit=loop.unit + "s", info=info)
            else:
                self._live.update(loop.bar_id, completed=loop.completed, info=info)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self.stream)
        self._live = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                              TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("ETA"),
                              TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                              transient=True, refresh_per_second=4)
        self._swap_prefect_consoles(console)
        self._live.start()

    def _stop_live(self) -> None:
        self._live.stop()
        self._live = None
        for handler, original in self._console_swaps:
            handler.console = original
        self._console_swaps = []

    def _swap_prefect_consoles(self, console: Any) -> None:
        """Prefect's console handler prints through its own rich Console; while bars are shown it
        prints through ours, so log lines appear above the bars instead of through them."""
        try:
            from prefect.logging.handlers import PrefectConsoleHandler
        except ImportError:
            return
        loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                          if isinstance(v, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                if isinstance(handler, PrefectConsoleHandler) and handler.console is not console:
                    self._console_swaps.append((handler, handler.console))
                    handler.console = console

    def _artifact(self, loop: Loop, final: bool = False) -> None:
        """Create the loop's progress artifact on its first update, update it after (API calls)."""
        percent = loop.percent()
        if percent is None:
            percent = 100.0 if final else 0.0
        description = f"**{loop.label}** — {loop.status()}"
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if loop.artifact is None:
                loop.artifact = create_progress_artifact(progress=percent, description=description)
            else:
                update_progress_artifact(loop.artifact, progress=percent, description=description)
        except Exception as e:  # noqa: BLE001 - progress must never fail a training
            loop.artifact_failed = True
            log.warning("progress artifact for %s given up: %s: %s", loop.label, type(e).__name__, e)


def install(mode: str | None = None) -> PipelineReporter:
    """Make the pipeline's reporter the process default for unlearn_ops loops (idempotent)."""
    current = progress.current_reporter()
    if isinstance(current, PipelineReporter) and mode is None:
        return current
    reporter = PipelineReporter(mode)
    progress.set_default_reporter(reporter)
    return reporter
