"""Issue 19 item 5: a class deletion waits for a person. The batch run processes everything else,
pauses in Prefect (`Paused`, a form for the decision), and resumes through the API the UI uses;
`unlearn request approve|deny` records the decision and resumes the same way."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from uuid import UUID

import yaml
from typer.testing import CliRunner

from flows import deletion_batch as db
from flows.cli import app
from tasks.registry import CHAMPION, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL, PARAMS, errors, make_workspace
from unlearn_ops.audit import AuditLog
from unlearn_ops.ledger import Ledger

SUBJECT = {"request_id": "r-subject", "model": MODEL, "kind": "subject", "subject_id": "subj-00007"}
CLASS = {"request_id": "r-class", "model": MODEL, "kind": "class", "class_label": 3}


def approval_workspace(tmp_path, tiny_model, timeout_s: int = 300):
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["approval"] = {"timeout_s": timeout_s}  # the defaults: class and concept required
    return make_workspace(tmp_path / "ws", tiny_model, params)


def champion() -> str:
    return str(version_by_alias(MODEL, CHAMPION).version)


def in_thread(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = db.deletion_batch(**kwargs)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def flow_run_state(run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id)).state


def paused_run(ledger: Ledger, request_id: str, box: dict, timeout: float = 300) -> str:
    """The flow run paused for this request (the ledger records it), once Prefect says Paused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert "error" not in box and "result" not in box, box  # the run must not end without a decision
        entries = ledger.find(request_id)
        waits = ledger.waits(entries[0].ledger_id) if entries else []
        if waits and (state := flow_run_state(waits[0]["flow_run_id"])) is not None and state.is_paused():
            return waits[0]["flow_run_id"]
        time.sleep(0.5)
    raise AssertionError(f"no run paused for {request_id} within {timeout} s")


def finished(thread: threading.Thread, box: dict) -> dict:
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not end after the decision"
    assert "error" not in box, box.get("error")
    return box["result"]


def test_class_request_pauses_the_run_and_resumes_on_approval(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input

    root = approval_workspace(tmp_path, tiny_model)
    ws, ledger = Workspace.at(root), Ledger(Workspace.at(root).ledger_path)
    for doc in (SUBJECT, CLASS):  # one inbox: an automatic request and one that needs approval
        (ws.inbox / f"{doc['request_id']}.json").write_text(json.dumps(doc))
    before = champion()
    thread, box = in_thread(root=str(root))

    run_id = paused_run(ledger, "r-class", box)
    # nothing else waited: the subject's batch is done while the run is paused
    assert ledger.find("r-subject")[0].state == "registered"
    assert ledger.find("r-class")[0].state == "awaiting_approval"
    subject_champion = champion()
    assert subject_champion != before
    state = flow_run_state(run_id)
    assert state.is_paused() and state.state_details.pause_key.startswith("approval-")
    keyset = state.state_details.run_input_keyset  # the form the UI shows
    schema = read_flow_run_input(keyset["schema"], flow_run_id=UUID(run_id))
    assert {"approver", "approve", "reason"} <= set(schema["properties"])
    assert "r-class" in read_flow_run_input(keyset["description"], flow_run_id=UUID(run_id))

    resume_flow_run(UUID(run_id), run_input={"approver": "alice", "approve": True, "reason": "licence withdrawn"})
    result = finished(thread, box)

    assert not errors(result), errors(result)
    assert [b["state"] for b in result["batches"]] == ["done", "done"] and result["awaiting_approval"] == []
    entry = ledger.find("r-class")[0]
    assert entry.state == "registered" and entry.batch_id == result["batches"][1]["batch_id"]
    assert [e["state"] for e in ledger.events("r-class")][:5] == ["received", "validated", "awaiting_approval",
                                                                   "approved", "in_batch"]
    assert champion() != subject_champion
    assert flow_run_state(run_id).is_completed()
    cert = json.loads((ws.certificates / f"{entry.batch_id}.json").read_text())
    [request] = cert["requests"]
    assert request["approval"]["approver"] == "alice" and request["approval"]["reason"] == "licence withdrawn"
    md = (ws.certificates / f"{entry.batch_id}.md").read_text()
    assert "`r-class`: approved by alice" in md
    assert AuditLog(ws.audit_log, ws.certificates).verify().ok


def test_deny_through_the_cli_resumes_the_run_and_rejects_with_the_reason(tmp_path, tiny_model, mlflow_tmp,
                                                                          prefect_harness):
    root = approval_workspace(tmp_path, tiny_model)
    ledger = Ledger(Workspace.at(root).ledger_path)
    before = champion()
    thread, box = in_thread(requests=[CLASS], root=str(root))
    run_id = paused_run(ledger, "r-class", box)

    out = CliRunner().invoke(app, ["request", "deny", "r-class", "--approver", "bob",
                                   "--reason", "the class is still licensed", "--root", str(root)])
    assert out.exit_code == 0, out.output
    assert f"resumed flow run {run_id}, which was paused for this request" in out.output
    result = finished(thread, box)

    entry = ledger.find("r-class")[0]
    assert (entry.state, entry.reason) == ("rejected", "denied by bob: the class is still licensed")
    assert result["batches"] == [] and result["batch_id"] is None
    assert champion() == before
    assert flow_run_state(run_id).is_completed()
    again = CliRunner().invoke(app, ["request", "approve", "r-class", "--approver", "eve", "--root", str(root)])
    assert again.exit_code == 1 and "already rejected (denied by bob" in again.output  # the first decision stands


def test_a_pause_that_times_out_leaves_the_request_waiting_for_a_later_run(tmp_path, tiny_model, mlflow_tmp,
                                                                           prefect_harness):
    root = approval_workspace(tmp_path, tiny_model, timeout_s=3)
    ledger = Ledger(Workspace.at(root).ledger_path)
    result = db.deletion_batch(requests=[CLASS], root=str(root))

    assert result["awaiting_approval"] == ["r-class"] and result["batches"] == []
    entry = ledger.find("r-class")[0]
    assert entry.state == "awaiting_approval"
    [wait] = ledger.waits(entry.ledger_id)
    assert flow_run_state(wait["flow_run_id"]).is_completed()  # a timeout is an outcome, not a failure

    out = CliRunner().invoke(app, ["request", "approve", "r-class", "--approver", "carol", "--root", str(root)])
    assert out.exit_code == 0, out.output
    assert "no run is paused for it: the next `unlearn batch run` processes it" in out.output
    later = db.deletion_batch(root=str(root), wait_for_approval=False)
    assert not errors(later), errors(later)
    assert later["state"] == "done" and ledger.find("r-class")[0].state == "registered"


def test_a_request_that_needs_no_approval_cannot_be_approved(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    root = approval_workspace(tmp_path, tiny_model)
    db.deletion_batch(requests=[SUBJECT], root=str(root))
    out = CliRunner().invoke(app, ["request", "approve", "r-subject", "--approver", "dan", "--root", str(root)])
    assert out.exit_code == 1 and "needs no approval" in out.output
    missing = CliRunner().invoke(app, ["request", "deny", "r-nobody", "--approver", "dan", "--reason", "x",
                                       "--root", str(root)])
    assert missing.exit_code == 1 and "no request 'r-nobody'" in missing.output


def test_the_demo_approves_its_own_class_request_and_never_pauses(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    """`make demo` must not hang: its class request needs approval (the default), and the demo
    approves it itself, as approver `demo`, through `unlearn request approve`'s code path."""
    root = approval_workspace(tmp_path, tiny_model, timeout_s=3600)
    for wave, doc in (("wave1", SUBJECT), ("wave2", CLASS)):
        (root / "ex" / wave).mkdir(parents=True)
        (root / "ex" / wave / f"{doc['request_id']}.json").write_text(json.dumps(doc))
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(out=CliRunner().invoke(
        app, ["demo", "--root", str(root), "--examples", "ex"])), daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the demo hung"
    out = box["out"]
    assert out.exit_code == 0, out.output
    assert ("demo: class request r-class needs a person's approval; the demo approved it as approver `demo`"
            in out.output)
    ledger = Ledger(Workspace.at(root).ledger_path)
    assert ledger.find("r-class")[0].state == ledger.find("r-subject")[0].state == "registered"
    approved = [e for e in ledger.events("r-class") if e["state"] == "approved"]
    assert json.loads(approved[0]["detail"])["approver"] == "demo"
