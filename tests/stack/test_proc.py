"""PID files: a part is stopped with its whole process tree, and a PID that now belongs to another
process is never signalled."""

from __future__ import annotations

import json
import os
import sys

import psutil

from stack import proc

PARENT_WITH_CHILD = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


def spawn(tmp_path) -> psutil.Process:
    pid = proc.spawn(tmp_path / "run", tmp_path / "logs", "part", [sys.executable, "-c", PARENT_WITH_CHILD],
                     dict(os.environ), tmp_path)
    p = psutil.Process(pid)
    proc.wait_until(lambda: len(p.children()) == 1, "the child", 30)
    return p


def test_stop_ends_the_process_and_its_children(tmp_path):
    p = spawn(tmp_path)
    child = p.children()[0]
    assert proc.process(tmp_path / "run", "part").pid == p.pid
    signalled = proc.stop(tmp_path / "run", "part", timeout=10)
    assert set(signalled) == {p.pid, child.pid}
    assert not p.is_running() and not child.is_running()
    assert proc.recorded(tmp_path / "run") == []


def test_a_reused_pid_is_left_alone(tmp_path):
    p = spawn(tmp_path)
    path = tmp_path / "run" / "part.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "started": info["started"] - 3600}))  # the recorded process is gone
    assert proc.process(tmp_path / "run", "part") is None
    assert proc.stop(tmp_path / "run", "part") == [] and p.is_running()
    path.write_text(json.dumps(info))
    proc.stop(tmp_path / "run", "part", timeout=10)
    assert not p.is_running()
