"""Processes started by `make up`: one PID file each, checked before any signal is sent.

A PID file records the PID and the process's start time; a PID that now belongs to another
process (reused after a reboot) is never signalled. Stopping a part stops its whole process tree
(servers' uvicorn children, a worker's flow-run processes, which Prefect starts in sessions of
their own).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from stack.config import StackError


def spawn(run_dir: Path, log_dir: Path, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start `argv` in a session of its own, output appended to logs/<name>.log; returns the PID."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    record(run_dir, name, process.pid, argv[:3])
    return process.pid


def record(run_dir: Path, name: str, pid: int, what: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    started = psutil.Process(pid).create_time()
    (run_dir / f"{name}.json").write_text(json.dumps({"pid": pid, "started": started, "cmd": what}))


def recorded(run_dir: Path) -> list[str]:
    return sorted(p.stem for p in run_dir.glob("*.json")) if run_dir.is_dir() else []


def process(run_dir: Path, name: str) -> psutil.Process | None:
    """The live process behind run/<name>.json, or None (no file, exited, or PID reused)."""
    path = run_dir / f"{name}.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    try:
        p = psutil.Process(info["pid"])
        if abs(p.create_time() - info["started"]) > 1.0 or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.NoSuchProcess:
        return None


def pid_of(run_dir: Path, name: str) -> int | None:
    path = run_dir / f"{name}.json"
    return json.loads(path.read_text())["pid"] if path.is_file() else None


def stop(run_dir: Path, name: str, timeout: float = 20.0, sig: str = "term") -> list[int]:
    """Stop the process tree behind run/<name>.json (SIGTERM, then SIGKILL after `timeout`; or
    SIGKILL at once with sig="kill"); removes the PID file. Returns the PIDs that were signalled."""
    p = process(run_dir, name)
    tree: list[psutil.Process] = []
    if p is not None:
        try:
            tree = [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for q in tree:
            try:
                q.kill() if sig == "kill" else q.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for q in alive:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
    (run_dir / f"{name}.json").unlink(missing_ok=True)
    return [q.pid for q in tree]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], what: str, timeout: float, alive: Callable[[], bool] | None = None,
               log: Path | None = None) -> float:
    """Poll `check` until it holds; a clear StackError (with the log's last lines) when the process
    died or `timeout` passed. Returns the seconds waited."""
    start = time.monotonic()
    while not check():
        died = alive is not None and not alive()
        if died or time.monotonic() - start > timeout:
            why = "exited" if died else f"did not pass its health check within {timeout:.0f} s"
            raise StackError(f"{what} {why}" + (f"; last lines of {log}:\n{tail(log)}" if log else ""))
        time.sleep(0.25)
    return time.monotonic() - start


def tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def env_with(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus `extra` (children inherit the quiet, offline settings)."""
    return {**os.environ, **extra}
