"""A batch's records survive the ledger's JSON; a recorded step is never run twice; requests only move forward."""

from __future__ import annotations

import pytest

from tasks.batch import (
    ERROR,
    FAILED,
    NOT_APPLICABLE,
    PASSED,
    UNLEARNED,
    Attempt,
    ForgetSet,
    ModelWork,
    Progress,
    advance,
    final_attempt,
    journaled,
    merged,
)
from unlearn_ops.ledger import Ledger
from unlearn_ops.verify.production import Verification

WORK = ModelWork(model="m", count=3, sha256="ab", kinds=["class", "subject"], classes=[3], ledger_ids=[1, 2],
                 request_ids=["r1", "r2"], work="/tmp/w")
GATES = {"subject": {"passed": False, "failed": ["mia_loss_auc"], "gates": []}}


def test_records_come_back_from_their_json():
    import json

    forget_set = ForgetSet(record="data/forget_sets/b.json", models=[WORK], dvc_md5="md5")
    assert ForgetSet.from_dict(json.loads(json.dumps(forget_set.to_dict()))) == forget_set
    attempt = Attempt("finetune", FAILED, seconds=1.5, model_dir="/tmp/a", details={"k": 1}, log=["x"],
                      metrics={"items": {"mia_loss_auc": 0.9}}, gates=GATES, reports={"roc": "/tmp/a/roc.png"})
    stored = json.loads(json.dumps(attempt.to_dict()))
    assert stored["passed"] is False and Attempt.from_dict(stored) == attempt


def test_an_attempt_says_why_it_did_not_pass():
    v = Verification(False, {"items": {"mia_loss_auc": 0.9}}, GATES, {})
    judged = Attempt("finetune", UNLEARNED, model_dir="/tmp/a").judged(v)
    assert judged.status == FAILED and judged.why_not() == "mia_loss_auc"
    assert judged.summary() == "FAIL subject: mia_loss_auc"
    assert Attempt("ssd", NOT_APPLICABLE, reason="item deletion").summary() == "NOT APPLICABLE (item deletion)"
    error = Attempt("scrub", ERROR, reason="ZeroDivisionError: division by zero", traceback="Traceback ...")
    assert error.why_not().startswith("ZeroDivisionError") and "traceback" in error.certified()
    passed = Attempt("retrain", PASSED)
    assert final_attempt([error, passed]) is passed and final_attempt([judged, error]) is error


@pytest.fixture()
def batch(tmp_path) -> tuple[Ledger, str, list[int]]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ids = []
    for rid in ("r1", "r2"):
        entry = ledger.receive(rid, "{}", "test")
        ledger.transition(entry.ledger_id, "validated")
        ids.append(entry.ledger_id)
    ledger.claim("b1")
    return ledger, "b1", ids


def test_a_recorded_step_is_not_run_again(batch):
    ledger, batch_id, _ = batch
    calls = []

    def extract() -> ForgetSet:
        calls.append(1)
        return ForgetSet("record.json", [WORK])

    steps = Progress(ledger, batch_id)
    first = steps.once("extract", extract, ForgetSet)
    again = Progress(Ledger(ledger.path), batch_id).once("extract", extract, ForgetSet)  # a resumed run
    assert first == again == ForgetSet("record.json", [WORK]) and calls == [1]
    steps.of("m").record("attempts", [Attempt("noop", FAILED)])
    assert ledger.batch(batch_id)["progress"]["m:attempts"][0]["method"] == "noop"
    assert not steps.done("attempts") and steps.of("m").done("attempts")


def test_requests_move_forward_once(batch):
    ledger, batch_id, ids = batch
    advance(ledger, ids, "forgotten", None, batch_id)
    advance(ledger, ids, "verified", None, batch_id)
    events = len(ledger.events())
    advance(ledger, ids, "forgotten", None, batch_id)  # a resumed run repeats an earlier move: nothing happens
    assert len(ledger.events()) == events
    assert {ledger.get(i).state for i in ids} == {"verified"}


def test_a_deleting_step_rerun_after_a_kill_still_reports_what_was_deleted(tmp_path):
    from tasks.workspace import Workspace

    ws = Workspace(tmp_path)
    first = {"removed": [{"md5": "a1"}, {"md5": "b2"}], "kept": [], "bytes_freed": 300}
    assert journaled(ws, "b1", "collection", lambda: first) == first   # killed before the step was recorded
    nothing_left = {"removed": [], "kept": [], "bytes_freed": 0}
    assert journaled(ws, "b1", "collection", lambda: nothing_left) == first   # the rerun finds nothing to delete
    assert journaled(ws, "b2", "collection", lambda: nothing_left) == nothing_left  # another batch: its own


def test_merged_joins_lists_without_repeats_and_adds_counts():
    assert merged({"a": [1, 2], "n": 2, "d": {"x": [1]}}, {"a": [2, 3], "n": 1, "d": {"x": [1], "y": 0}}) == \
        {"a": [1, 2, 3], "n": 3, "d": {"x": [1], "y": 0}}
    assert merged(["p"], []) == ["p"] and merged(True, False) is False
