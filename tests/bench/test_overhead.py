"""bench/overhead.py: self times add up to the wall time; the quick run goes through the real flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import overhead

ROOT = Path(__file__).resolve().parents[2]


def test_self_times_add_up_and_nested_calls_are_not_counted_twice():
    timers = overhead.Timers()
    inner = timers.wrap("mlflow.log", lambda: time.sleep(0.05))

    def work():
        time.sleep(0.05)
        inner()

    outer = timers.wrap("prefect", work)
    start = time.perf_counter()
    outer()
    wall = time.perf_counter() - start
    assert 0.04 < timers.seconds["prefect"] < 0.09 and 0.04 < timers.seconds["mlflow.log"] < 0.09
    b = overhead.breakdown(timers, wall)
    assert abs(b["measured_s"] - wall) < 0.01 and b["seconds"]["mlflow"] > 0 and b["mlflow"]["log"] > 0
    assert b["orchestration_share"] > 0.9 and not b["goal_met"]


def test_instrumenting_is_undone():
    from prefect.flows import Flow
    from prefect.tasks import Task

    from unlearn_ops.data.store import SampleStore

    before = (Flow.__call__, Task.__call__, SampleStore.splits)
    with overhead.instrumented(overhead.Timers()):
        assert SampleStore.splits is not before[2]
    assert (Flow.__call__, Task.__call__, SampleStore.splits) == before


def test_quick_run_through_the_flow(tmp_path):
    """In a process of its own, as `python -m bench overhead` runs: it starts and stops a Prefect
    server and points MLflow and Prefect at its own folders, none of which may reach the tests
    after it (in this process it once left a later test's paused flow hanging)."""
    code = ("from pathlib import Path\nfrom bench import overhead, references as refs\n"
            f"refs.CACHE = Path({str(tmp_path / 'cache')!r})\n"
            f"overhead.main(['--quick', '--no-probe', '--out-dir', {str(tmp_path / 'out')!r}])\n")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'unused.db'}", PREFECT_HOME=str(tmp_path / "unused"))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "overhead.json").read_text())
    assert set(result["batches"]) == {"subject", "class"}
    for b in result["batches"].values():
        assert b["outcome"] == "REGISTERED", b
        assert abs(b["measured_s"] - b["wall_s"]) <= 0.05 * b["wall_s"] + 0.1   # every second accounted for
        assert b["seconds"]["prefect"] > 0 and b["seconds"]["mlflow"] > 0 and b["seconds"]["dvc"] > 0
        assert b["seconds"]["data"] > 0 and b["seconds"]["verification"] > 0
    saved = json.loads((tmp_path / "out" / "overhead.json").read_text())
    assert saved["protocol"] == "overhead" and saved["model"]["dataset"] == "digits"
    assert "not measured in this run" in (tmp_path / "out" / "overhead.md").read_text()
