"""unlearn_task: a method that does not apply is a quiet attempt; a method that raises anything
else is an error attempt with its traceback, logged at ERROR; neither stops the chain."""

from __future__ import annotations

import logging

import pytest

from tasks.batch import ERROR, NOT_APPLICABLE, UNLEARNED
from tasks.unlearning import unlearn_task
from tests.conftest import FORGET_CLASS
from unlearn_ops.methods import finetune
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.models import save_model

FAST = {"epochs": 1, "lr": 1e-3, "batch_size": 64}


@pytest.fixture()
def champion(tmp_path, tiny_model, tiny_spec) -> str:
    return str(save_model(tiny_model, tiny_spec, tmp_path / "champion"))


def run(champion: str, store, out: str):
    ids = store.class_ids(FORGET_CLASS)
    return unlearn_task(champion, str(store.root), ids, "classifier", "finetune", FAST, "cpu", out)


def test_a_method_that_runs_leaves_a_model_to_verify(champion, digits_store, tmp_path, prefect_harness):
    attempt = run(champion, digits_store, str(tmp_path / "out"))
    assert attempt.status == UNLEARNED and attempt.model_dir == str(tmp_path / "out") and attempt.seconds > 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_not_applicable_is_recorded_quietly(champion, digits_store, tmp_path, prefect_harness, monkeypatch, caplog):
    def does_not_apply(*args, **kwargs):
        raise NotApplicable("finetune: not for this forget set")

    monkeypatch.setattr(finetune, "unlearn", does_not_apply)
    with caplog.at_level(logging.INFO):
        attempt = run(champion, digits_store, str(tmp_path / "out"))
    assert attempt.status == NOT_APPLICABLE and attempt.reason == "finetune: not for this forget set"
    assert attempt.model_dir is None and attempt.traceback is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and ("finetune" in r.getMessage() or r.exc_info)]


def test_a_bug_is_an_error_attempt_logged_with_its_traceback(champion, digits_store, tmp_path, prefect_harness,
                                                             monkeypatch, caplog):
    def buggy(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(finetune, "unlearn", buggy)
    with caplog.at_level(logging.ERROR):
        attempt = run(champion, digits_store, str(tmp_path / "out"))
    assert attempt.status == ERROR and attempt.reason == "ZeroDivisionError: division by zero"
    assert "return 1 / 0" in attempt.traceback and attempt.model_dir is None
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR and "finetune" in r.getMessage()]
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError
