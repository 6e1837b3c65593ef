"""A test hook for crash testing, not a feature: `fault_point(name)` kills this process with
SIGKILL — no exception, no clean-up, as a power cut or the OOM killer would — when the environment
variable UNLEARN_FAULT_AFTER equals `name`; otherwise it does nothing. The deletion batch calls it
right after each step's side effect and before the step is recorded (the harshest moment), so
tests/flows/test_crash_harness.py can kill a real `unlearn batch run` at every boundary and check
what the rerun makes of it. Nothing but that test sets the variable."""

from __future__ import annotations

import os
import signal
import sys

FAULT_ENV = "UNLEARN_FAULT_AFTER"

# Every boundary, in the order a batch passes them (attempts and model steps once per method / model;
# `<method>` and the model name are appended after a colon where the flow passes them).
BOUNDARIES = ("intake", "claim", "extract", "dvc_version", "champion", "attempt", "verify", "register",
              "promote", "purge", "dvc_commit", "retirement", "report", "collection", "expiry", "build_outputs",
              "work_folders", "erasure_scan", "certificate", "audit", "close")


def fault_point(name: str, detail: str | None = None) -> None:
    """SIGKILL this process here if UNLEARN_FAULT_AFTER names this boundary (`name` or `name:detail`)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted is None:
        return
    if name not in BOUNDARIES:
        raise ValueError(f"unknown fault boundary {name!r}; add it to tasks.faults.BOUNDARIES")
    if wanted in (name, f"{name}:{detail}"):
        sys.stdout.flush()
        # straight to the file descriptor: a flow's `log_prints` would turn a print into a log record
        os.write(2, f"fault_point: SIGKILL after {wanted}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
