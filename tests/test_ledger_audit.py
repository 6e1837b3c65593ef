"""The ledger's state machine and claiming; the audit log's hash chain."""

from __future__ import annotations

import json
import threading

import pytest

from unlearn_ops.audit import AuditLog, write_certificate
from unlearn_ops.ledger import Ledger, LedgerError


def test_transitions_are_enforced_and_logged(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    e = ledger.receive("r1", "{}", "test")
    ledger.transition(e.ledger_id, "validated")
    with pytest.raises(LedgerError, match="validated → registered is not allowed"):
        ledger.transition(e.ledger_id, "registered")
    ledger.transition(e.ledger_id, "validated")  # idempotent: no second event
    assert [ev["state"] for ev in ledger.events("r1")] == ["received", "validated"]


def test_concurrent_claims_never_share_a_request(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    for i in range(30):
        ledger.transition(ledger.receive(f"r{i}", "{}", "test").ledger_id, "validated")
    claimed: list[list[str]] = []

    def claim(n):
        claimed.append([e.request_id for e in Ledger(tmp_path / "l.sqlite").claim(f"batch-{n}")])

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    taken = [r for batch in claimed for r in batch]
    assert sorted(taken) == sorted(f"r{i}" for i in range(30))  # each request exactly once
    assert sum(1 for batch in claimed if batch) == 1


def test_claim_holds_requests_that_need_approval_and_takes_approved_ones(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    for rid, kind in (("subject", "subject"), ("class", "class"), ("concept", "concept")):
        ledger.transition(ledger.receive(rid, "{}", "test", kind=kind).ledger_id, "validated")
    first = ledger.claim("b1", hold={"class", "concept"})
    assert [e.request_id for e in first] == ["subject"]
    assert {e.request_id for e in ledger.entries(state="awaiting_approval")} == {"class", "concept"}
    assert ledger.claim("b2", hold={"class", "concept"}) == []            # nothing claimable until decided
    cls, concept = ledger.find("class")[0], ledger.find("concept")[0]
    ledger.transition(cls.ledger_id, "approved", "approved by alice")
    ledger.transition(concept.ledger_id, "rejected", "denied by bob: no")
    late = ledger.receive("late", "{}", "test", kind="class")
    ledger.transition(late.ledger_id, "validated")
    assert [e.request_id for e in ledger.hold({"class"})] == ["late"]
    with pytest.raises(LedgerError, match="awaiting_approval → in_batch is not allowed"):
        ledger.transition(late.ledger_id, "in_batch")                     # never claimed unapproved
    second = ledger.claim("b3", hold={"class", "concept"})
    assert [e.request_id for e in second] == ["class"] and second[0].batch_id == "b3"
    assert [ev["state"] for ev in ledger.events("class")] == ["received", "validated", "awaiting_approval",
                                                              "approved", "in_batch"]


def test_approval_waits_are_recorded_newest_first(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    e = ledger.receive("r1", "{}", "test", kind="class")
    ledger.record_wait(e.ledger_id, "run-a", "approval-1", "2030-01-01T00:00:00+00:00")
    ledger.record_wait(e.ledger_id, "run-b", "approval-1", "2030-01-02T00:00:00+00:00")
    assert [w["flow_run_id"] for w in ledger.waits(e.ledger_id)] == ["run-b", "run-a"]


def certify(tmp_path, n):
    certs = tmp_path / "certs"
    log = AuditLog(tmp_path / "log.jsonl", certs)
    for i in range(n):
        path, _, _ = write_certificate({"batch_id": f"b{i}", "issued_at": "now", "outcome": "REGISTERED",
                                        "requests": [], "models": []}, certs)
        log.append(f"b{i}", path)
    return log, certs


def test_chain_verifies_and_append_is_idempotent(tmp_path):
    log, certs = certify(tmp_path, 3)
    log.append("b1", certs / "b1.json")
    assert len(log.entries()) == 3
    assert log.verify().ok


@pytest.mark.parametrize("tamper, message", [
    (lambda log, certs: (certs / "b1.json").write_text("{}"), "entry 1 (batch b1): certificate b1.json was modified"),
    (lambda log, certs: (certs / "b2.json").unlink(), "entry 2 (batch b2): certificate"),
    (lambda log, certs: log.path.write_text("\n".join(log.path.read_text().splitlines()[1:]) + "\n"), "entry 0"),
    (lambda log, certs: log.path.write_text(log.path.read_text().replace('"b1"', '"bX"')), "entry 1"),
])
def test_tampering_is_found_at_the_first_broken_link(tmp_path, tamper, message):
    log, certs = certify(tmp_path, 3)
    tamper(log, certs)
    result = log.verify()
    assert not result.ok and message in result.message
    assert json  # the log stays JSON lines
