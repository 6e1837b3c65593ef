"""The crash-test hook: a no-op unless asked, a real SIGKILL when asked, and one list of boundaries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.faults import BOUNDARIES, FAULT_ENV, fault_point

ROOT = Path(__file__).resolve().parents[2]


def test_fault_point_does_nothing_unless_its_boundary_is_named(monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    fault_point("intake")
    monkeypatch.setenv(FAULT_ENV, "claim")
    fault_point("intake")
    fault_point("attempt", "retrain")
    with pytest.raises(ValueError, match="unknown fault boundary 'nonsense'"):
        fault_point("nonsense")


def test_fault_point_sigkills_its_own_process():
    code = "from tasks.faults import fault_point\nfault_point('attempt', 'retrain')\nprint('survived')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, FAULT_ENV: "attempt:retrain"})
    assert out.returncode == -9 and "survived" not in out.stdout
    assert "fault_point: SIGKILL after attempt:retrain" in out.stderr


def test_every_boundary_the_code_names_is_listed():
    code = "\n".join(p.read_text() for d in ("flows", "tasks") for p in (ROOT / d).glob("*.py"))
    # literal calls, and the erase steps of flows/deletion_batch.py (`step(name, …)` calls fault_point(name))
    named = set(re.findall(r'fault_point\("(\w+)"', code)) | set(re.findall(r'step\("(\w+)"', code))
    assert named == set(BOUNDARIES)
