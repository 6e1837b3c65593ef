"""bench/overhead.py: self times add up to the wall time; the quick run goes through the real flow."""

from __future__ import annotations

import json
import time

from bench import overhead
from bench import references as refs


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


def test_quick_run_through_the_flow(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///unused.db")   # restored after the test
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "unused"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = overhead.main(["--quick", "--no-probe", "--out-dir", str(tmp_path / "out")])
    assert set(result["batches"]) == {"subject", "class"}
    for b in result["batches"].values():
        assert b["outcome"] == "REGISTERED", b
        assert abs(b["measured_s"] - b["wall_s"]) <= 0.05 * b["wall_s"] + 0.1   # every second accounted for
        assert b["seconds"]["prefect"] > 0 and b["seconds"]["mlflow"] > 0 and b["seconds"]["dvc"] > 0
        assert b["seconds"]["data"] > 0 and b["seconds"]["verification"] > 0
    saved = json.loads((tmp_path / "out" / "overhead.json").read_text())
    assert saved["protocol"] == "overhead" and saved["model"]["dataset"] == "digits"
    assert "not measured in this run" in (tmp_path / "out" / "overhead.md").read_text()
