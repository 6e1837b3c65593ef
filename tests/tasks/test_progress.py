"""tasks/progress.py: the terminal display modes and the Prefect progress artifact of a long loop."""

from __future__ import annotations

import io
import logging

import pytest

from tasks import progress as tp
from unlearn_ops.progress import reporting_to, section, track


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_mode_is_bars_on_a_terminal_lines_elsewhere_and_nothing_in_ci(monkeypatch):
    monkeypatch.delenv("UNLEARN_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert tp.resolve_mode(None, Tty()) == "bar"
    assert tp.resolve_mode(None, io.StringIO()) == "lines"
    monkeypatch.setenv("CI", "true")
    assert tp.resolve_mode(None, Tty()) == "off"
    assert tp.PipelineReporter(stream=Tty()).artifacts is False
    monkeypatch.setenv("UNLEARN_PROGRESS", "lines")
    assert tp.resolve_mode(None, Tty()) == "lines"      # asked for explicitly, CI or not


def test_an_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("UNLEARN_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="UNLEARN_PROGRESS='fancy'"):
        tp.resolve_mode()


def test_the_test_suite_runs_quiet():
    assert tp.resolve_mode() == "off"   # tests/conftest.py: no bars, lines or artifacts in test output


def test_lines_mode_prints_the_status_with_eta_every_few_seconds(monkeypatch):
    monkeypatch.setattr(tp, "LINE_EVERY_S", 0.0)
    monkeypatch.setattr("unlearn_ops.progress.UPDATES_PER_SECOND", 1e9)  # pass every step on
    out = io.StringIO()
    with reporting_to(tp.PipelineReporter("lines", stream=out, artifacts=False)), section("unlearn retrain"):
        with track("training", 4) as bar:
            for _ in range(4):
                bar.advance(epoch="1/1")
    lines = out.getvalue().splitlines()
    assert lines and lines[0].startswith("[progress] unlearn retrain › training: 1/4 steps (25 %), epoch 1/1")
    assert "ETA" in lines[0] and "ETA" not in lines[-1]          # no ETA once every step is done


def test_bar_mode_shows_a_bar_while_the_loop_runs_and_gives_prefects_console_back(monkeypatch):
    from prefect.logging.handlers import PrefectConsoleHandler

    monkeypatch.setattr(tp, "BAR_AFTER_S", 0.0)
    monkeypatch.setattr("unlearn_ops.progress.UPDATES_PER_SECOND", 1e9)
    handler = PrefectConsoleHandler(stream=io.StringIO())
    logger = logging.getLogger("prefect.test-progress")
    logger.addHandler(handler)
    original = handler.console
    reporter = tp.PipelineReporter("bar", stream=Tty(), artifacts=False)
    try:
        with reporting_to(reporter), track("training", 3) as bar:
            bar.advance()
            assert reporter._live is not None and len(reporter._live.tasks) == 1
            assert handler.console is reporter._live.console   # log lines print above the bar
    finally:
        logger.removeHandler(handler)
    assert reporter._live is None and handler.console is original


def test_a_long_loop_in_a_task_leaves_a_progress_artifact(prefect_harness, monkeypatch):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    monkeypatch.setattr(tp, "ARTIFACT_AFTER_S", 0.0)
    monkeypatch.setattr(tp, "ARTIFACT_EVERY_S", 0.0)
    monkeypatch.setattr("unlearn_ops.progress.UPDATES_PER_SECOND", 1e9)

    @task
    def train() -> None:
        with section("unlearn retrain"), track("training", 5) as bar:
            for _ in range(5):
                with track("predicting", 2, "sample") as inner:   # nested: a bar, no artifact of its own
                    inner.advance(2)
                bar.advance(epoch="1/1")

    @flow
    def run() -> str:
        with reporting_to(tp.PipelineReporter("off", artifacts=True)):
            train()
        from prefect.runtime import flow_run

        return flow_run.id

    run()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    ours = [a for a in found if "unlearn retrain › training" in (a.description or "")]
    assert ours and ours[-1].data == 100.0 and "5/5 steps" in ours[-1].description
    assert not [a for a in found if "predicting" in (a.description or "")]


def test_a_failing_artifact_call_never_fails_the_loop(monkeypatch, caplog):
    monkeypatch.setattr(tp, "ARTIFACT_AFTER_S", 0.0)
    monkeypatch.setattr(tp, "run_context", lambda: True)
    monkeypatch.setattr("unlearn_ops.progress.UPDATES_PER_SECOND", 1e9)

    def broken(**_):
        raise ConnectionError("no server")

    monkeypatch.setattr("prefect.artifacts.create_progress_artifact", broken)
    with caplog.at_level(logging.WARNING, logger="unlearn_ops"):
        with reporting_to(tp.PipelineReporter("off", artifacts=True)), track("training", 3) as bar:
            for _ in range(3):
                bar.advance()
    assert caplog.text.count("given up") == 1 and "ConnectionError: no server" in caplog.text
