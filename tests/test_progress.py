"""unlearn_ops.progress: loops report steps (throttled) and one line per epoch to the installed reporter."""

from __future__ import annotations

import logging

import pytest
import torch

from unlearn_ops import progress
from unlearn_ops.data.splits import Part
from unlearn_ops.progress import reporting_to, section, track
from unlearn_ops.training import TrainConfig, fit


class Recorder:
    """A reporter that keeps every call."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None, str]] = []
        self.updates: list[tuple[str, int, dict]] = []
        self.notes: list[tuple[str, str]] = []
        self.finished: list[tuple[str, int]] = []

    def start(self, what, total, unit):
        self.started.append((what, total, unit))
        return what

    def update(self, token, completed, info):
        self.updates.append((token, completed, info))

    def note(self, token, line):
        self.notes.append((token, line))

    def done(self, token, completed):
        self.finished.append((token, completed))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_advance_passes_counts_on_at_most_a_few_times_a_second(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    rec = Recorder()
    with reporting_to(rec), track("training", 1000) as bar:
        for _ in range(1000):
            clock.now += 0.001          # 1 000 steps in one second
            bar.advance(loss=0.5)
    assert rec.started == [("training", 1000, "step")]
    assert len(rec.updates) <= progress.UPDATES_PER_SECOND + 1   # + the final one
    assert rec.updates[-1] == ("training", 1000, {"loss": 0.5})
    assert rec.finished == [("training", 1000)]


def test_sections_name_the_loops_inside_and_nest():
    rec = Recorder()
    with reporting_to(rec):
        with section("unlearn retrain"), section("member 2"):
            track("training", 3).close()
        track("training", 3).close()
    assert [s[0] for s in rec.started] == ["unlearn retrain › member 2 › training", "training"]


def test_reporting_to_is_undone_after_the_block():
    rec = Recorder()
    before = progress.current_reporter()
    with reporting_to(rec):
        assert progress.current_reporter() is rec
    assert progress.current_reporter() is before


def test_the_default_reporter_logs_the_notes(caplog):
    with reporting_to(progress.LogReporter()), caplog.at_level(logging.INFO, logger="unlearn_ops"):
        with track("training", 2) as bar:
            bar.note("epoch 1: loss 0.5")
    assert "training: epoch 1: loss 0.5" in caplog.text


def test_fit_reports_every_step_and_one_line_per_epoch():
    part = Part(tuple(f"s{i}" for i in range(40)), torch.randn(40, 4), torch.arange(40) % 2)
    rec = Recorder()
    with reporting_to(rec):
        fit(torch.nn.Linear(4, 2), part, TrainConfig(epochs=2, batch_size=16, device="cpu"), what="head training")
    assert rec.started == [("head training", 6, "step")]      # 2 epochs × 3 batches
    assert rec.finished == [("head training", 6)]
    assert [line.split(":")[0] for _, line in rec.notes] == ["epoch 1", "epoch 2"]
    assert rec.updates[-1][2]["epoch"] == "2/2"


def test_fit_with_a_reporter_trains_the_same_weights():
    """Reporting observes; it never changes what is trained (same seed → same weights)."""
    part = Part(tuple(f"s{i}" for i in range(40)), torch.randn(40, 4), torch.arange(40) % 2)
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", seed=3)
    torch.manual_seed(0)
    quiet = fit(torch.nn.Linear(4, 2), part, cfg)
    torch.manual_seed(0)
    with reporting_to(Recorder()):
        watched = fit(torch.nn.Linear(4, 2), part, cfg)
    assert torch.equal(quiet.weight, watched.weight)


@pytest.mark.parametrize("n", [0, 3])
def test_a_loop_that_ends_early_still_reports_done(n):
    from unlearn_ops.methods._loops import paired_batches

    data = Part(tuple(f"s{i}" for i in range(8)), torch.zeros(8, 1), torch.zeros(8, dtype=torch.long))
    rec = Recorder()
    with reporting_to(rec):
        batches = paired_batches(data, data, steps=10, batch_size=2, retain_batch_size=2, seed=0)
        for i, _ in enumerate(batches):
            if i == n:
                break
        batches.close()
    assert rec.started == [("unlearning", 10, "step")] and rec.finished == [("unlearning", n)]
