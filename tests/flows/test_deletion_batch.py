"""The deletion_batch flow end to end on a tiny deployment (digits, temp MLflow, temp DVC repo)."""

from __future__ import annotations

import json

import pytest
import yaml

from flows import deletion_batch as db
from tasks.registry import CANDIDATE, CHAMPION, version_by_alias
from tasks.workspace import ConfigError, Workspace
from tests.flows.conftest import MODEL, PARAMS, errors, make_workspace
from unlearn_ops.audit import AuditLog
from unlearn_ops.data.store import SampleStore
from unlearn_ops.ledger import Ledger

SUBJECT = {"request_id": "r-subject", "model": MODEL, "kind": "subject", "subject_id": "subj-00007"}
CLASS = {"request_id": "r-class", "model": MODEL, "kind": "class", "class_label": 3}


def versions(name: str) -> list[str]:
    from mlflow import MlflowClient

    return sorted(v.version for v in MlflowClient().search_model_versions(f"name = '{name}'"))


def champion() -> str:
    return str(version_by_alias(MODEL, CHAMPION).version)


def test_happy_path_end_to_end(workspace):
    ws = Workspace.at(workspace)
    (ws.inbox / "bad.json").write_text('{"model": "digits-classifier", "kind": "sample"}')
    store = ws.store_for(MODEL)
    subject_ids = set(store.subject_ids("subj-00007"))
    before = champion()

    result = db.deletion_batch(requests=[SUBJECT, CLASS], root=str(workspace))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    ledger = Ledger(ws.ledger_path)
    states = {e.request_id: e.state for e in ledger.entries()}
    assert states["r-subject"] == states["r-class"] == "registered"
    # the malformed inbox file is quarantined with its reason, and kept in the ledger
    quarantined = list(ws.quarantine.glob("*bad.json"))
    assert quarantined and "kind" in quarantined[0].with_name(quarantined[0].name + ".reason.txt").read_text()
    assert any(e.state == "rejected" for e in ledger.entries())
    # data: gone from the manifest and purged from the store
    store = SampleStore(store.root)
    active = set(store.active_ids())
    assert not subject_ids & active
    assert not set(store.class_ids(3)) & active
    assert store.index.loc[sorted(subject_ids), "purged"].all()
    # registry: a new champion tagged with its lineage
    after = champion()
    assert after != before
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(MODEL, after).tags
    assert tags["batch_id"] == result["batch_id"] and tags["base_version"] == before and tags["verdict"] == "pass"
    assert "r-class" in tags["request_ids"]
    # forget-set record: IDs and hashes, never pixels; DVC-tracked
    record = json.loads((ws.forget_sets / f"{result['batch_id']}.json").read_text())
    assert record["applied"][MODEL] is True
    assert set(record["models"][MODEL]["sample_ids"]) >= subject_ids
    assert (ws.forget_sets / f"{result['batch_id']}.json.dvc").is_file()
    # certificate + audit chain
    cert = json.loads((ws.certificates / f"{result['batch_id']}.json").read_text())
    assert cert["outcome"] == "REGISTERED"
    assert AuditLog(ws.audit_log, ws.certificates).verify().ok

    # re-running the same batch changes nothing
    n_versions, n_events = len(versions(MODEL)), len(ledger.events())
    again = db.deletion_batch(batch_id=result["batch_id"], root=str(workspace))
    assert again["state"] == "done"
    assert len(versions(MODEL)) == n_versions and len(ledger.events()) == n_events
    # and a request for the already forgotten subject is rejected
    late = db.deletion_batch(requests=[{**SUBJECT, "request_id": "r-late"}], root=str(workspace))
    assert late["batch_id"] is None
    assert "already forgotten" in ledger.find("r-late")[0].reason

    # tampering with a certificate is detected
    path = ws.certificates / f"{result['batch_id']}.json"
    path.write_text(path.read_text().replace("REGISTERED", "FORGED"))
    verdict = AuditLog(ws.audit_log, ws.certificates).verify()
    assert not verdict.ok and "was modified" in verdict.message


def test_failing_method_falls_back_to_retrain(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["policy"][MODEL]["class"] = ["noop", "retrain"]
    root = make_workspace(tmp_path / "ws", tiny_model, params)
    result = db.deletion_batch(requests=[CLASS], root=str(root))
    assert not errors(result), errors(result)
    attempts = result["models"][0]["attempts"]
    assert [a["method"] for a in attempts] == ["noop", "retrain"]
    assert [a["passed"] for a in attempts] == [False, True]
    assert "forget_accuracy" in attempts[0]["gates"]["class"]["failed"]
    cert = (Workspace.at(root).certificates / f"{result['batch_id']}.md").read_text()
    assert "noop ✗ → retrain ✓" in cert


def test_failed_batch_leaves_champion_and_data_untouched(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["gates"]["class"]["forget_accuracy"] = {"max": -1.0}  # an impossible privacy gate: every method fails
    root = make_workspace(tmp_path / "ws", tiny_model, params)
    ws = Workspace.at(root)
    manifest = ws.store_for(MODEL).manifest_path().read_text()
    before = champion()
    result = db.deletion_batch(requests=[CLASS], root=str(root))
    assert not errors(result), errors(result)
    assert result["state"] == "failed"
    assert champion() == before
    assert str(version_by_alias(MODEL, CANDIDATE).version) != before  # the failed candidate is kept for audit
    assert ws.store_for(MODEL).manifest_path().read_text() == manifest
    assert not SampleStore(ws.store_for(MODEL).root).index.purged.any()
    entry = Ledger(ws.ledger_path).find("r-class")[0]
    assert entry.state == "failed" and "forget_accuracy" in entry.reason
    record = json.loads((ws.forget_sets / f"{result['batch_id']}.json").read_text())
    assert record["applied"][MODEL] is False


def test_exact_method_failing_a_utility_gate_is_promoted_with_the_regression_flagged(tmp_path, tiny_model,
                                                                                    mlflow_tmp, prefect_harness):
    """Issue 19 item 6: a utility gate no model can pass.
    The approximate `finetune` fails it and the chain falls back; the exact `retrain` passes on its
    privacy gates, so the subject is erased and the regression is flagged in the ledger, the
    registry and the certificate."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["gates"]["subject"]["test_accuracy_drop"] = {"max": -0.5}  # test accuracy must rise 50 points
    root = make_workspace(tmp_path / "ws", tiny_model, params)
    ws = Workspace.at(root)
    before = champion()
    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    finetune, retrain = result["models"][0]["attempts"]
    assert (finetune["method"], finetune["status"]) == ("finetune", "failed")
    assert "test_accuracy_drop" in finetune["gates"]["subject"]["failed"] and not finetune["regressions"]
    assert (retrain["method"], retrain["status"]) == ("retrain", "passed")
    assert retrain["gates"]["subject"]["failed"] == ["test_accuracy_drop"]
    [flag] = retrain["regressions"]
    assert flag.startswith("test_accuracy_drop ") and flag.endswith(" > -0.5")

    note = f"promoted with utility regression: {flag}"
    entry = Ledger(ws.ledger_path).find("r-subject")[0]
    assert (entry.state, entry.reason) == ("registered", note)
    assert champion() != before
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version(MODEL, champion()).tags["utility_regression"] == flag
    assert not set(ws.store_for(MODEL).subject_ids("subj-00007")) & set(ws.store_for(MODEL).active_ids())
    cert = json.loads((ws.certificates / f"{result['batch_id']}.json").read_text())
    assert cert["outcome"] == "REGISTERED" and cert["models"][0]["regressions"] == [flag]
    md = (ws.certificates / f"{result['batch_id']}.md").read_text()
    assert f"Promoted with utility regression: {flag}" in md and "| FAIL (utility) |" in md


def test_crash_between_steps_is_resumed(tmp_path, tiny_model, mlflow_tmp, prefect_harness, monkeypatch):
    root = make_workspace(tmp_path / "ws", tiny_model)
    ws = Workspace.at(root)
    real = db.promote_task

    def crash(*args, **kwargs):
        raise RuntimeError("injected crash before promotion")

    monkeypatch.setattr(db, "promote_task", crash)
    before = champion()
    with pytest.raises(RuntimeError, match="injected crash"):
        db.deletion_batch(requests=[SUBJECT], root=str(root))
    ledger = Ledger(ws.ledger_path)
    entry = ledger.find("r-subject")[0]
    assert entry.state == "verified"             # consistent: verified, not registered
    assert champion() == before                  # nothing promoted
    assert set(ws.store_for(MODEL).subject_ids("subj-00007")) <= set(ws.store_for(MODEL).active_ids())
    assert ledger.open_batches() == [entry.batch_id]

    monkeypatch.setattr(db, "promote_task", real)
    n_versions = len(versions(MODEL))
    result = db.deletion_batch(root=str(root))    # the next run finishes the batch
    assert not errors(result), errors(result)
    assert result["batch_id"] == entry.batch_id and result["state"] == "done"
    assert ledger.find("r-subject")[0].state == "registered"
    assert len(versions(MODEL)) == n_versions     # the candidate registered before the crash is reused
    assert champion() != before


def test_class_request_uses_neuron_perturbation_and_passes_production_gates(tmp_path, tiny_model, mlflow_tmp,
                                                                             prefect_harness):
    """Issue 5: the policy's default for class requests, with params.yaml's own method settings and
    class gates (not the loosened test gates), forgets the class without falling back to retrain."""
    from flows.params import load_params

    production = load_params()
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    # the production chain's first method; the tiny model is monolithic, so its exact end is `retrain`
    params["policy"][MODEL]["class"] = [production["policy"]["fmnist-classifier"]["class"][0], "retrain"]
    params["unlearn"]["neuron_perturbation"] = production["unlearn"]["neuron_perturbation"]
    params["gates"]["class"] = production["gates"]["class"]
    assert params["policy"][MODEL]["class"][0] == "neuron_perturbation"
    root = make_workspace(tmp_path / "ws", tiny_model, params)

    result = db.deletion_batch(requests=[CLASS], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempts = result["models"][0]["attempts"]
    assert [a["method"] for a in attempts] == ["neuron_perturbation"], attempts
    assert attempts[0]["passed"] is True
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(MODEL, champion()).tags
    assert tags["method"] == "neuron_perturbation" and tags["verdict"] == "pass"




def test_a_bug_in_a_method_is_reported_and_the_request_still_honoured(tmp_path, tiny_model, mlflow_tmp,
                                                                      prefect_harness, monkeypatch, caplog):
    """A method that raises (here a ZeroDivisionError) is not a quiet fallback: the attempt is an
    `error` with its traceback, logged at ERROR and shown in the certificate, and the chain goes on
    to the exact method, which honours the request."""
    import logging

    from unlearn_ops.methods import finetune

    def buggy(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(finetune, "unlearn", buggy)
    root = make_workspace(tmp_path / "ws", tiny_model)
    with caplog.at_level(logging.ERROR):
        result = db.deletion_batch(requests=[SUBJECT], root=str(root))

    assert result["state"] == "done", result
    attempts = result["models"][0]["attempts"]
    assert [(a["method"], a["status"]) for a in attempts] == [("finetune", "error"), ("retrain", "passed")]
    assert errors(result) == [attempts[0]]
    assert attempts[0]["reason"] == "ZeroDivisionError: division by zero" and "return 1 / 0" in attempts[0]["traceback"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "`finetune`" in r.getMessage()]
    assert logged and logged[0].exc_info[0] is ZeroDivisionError
    ws = Workspace.at(root)
    md = (ws.certificates / f"{result['batch_id']}.md").read_text()
    assert "### Attempt `finetune` — ERROR" in md and "ZeroDivisionError" in md and "return 1 / 0" in md
    assert "finetune ✗ → retrain ✓" in md
    assert Ledger(ws.ledger_path).find("r-subject")[0].state == "registered"


def test_two_models_on_one_store_stop_the_run_before_the_inbox_is_read(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["models"]["digits-gan"] = {**params["models"][MODEL], "family": "gan"}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    ws = Workspace.at(workspace)
    ws.inbox.mkdir(parents=True, exist_ok=True)
    (ws.inbox / "subject.json").write_text(json.dumps(SUBJECT))
    with pytest.raises(ConfigError, match="models.digits-classifier and models.digits-gan"):
        db.deletion_batch(root=str(workspace))
    assert (ws.inbox / "subject.json").exists() and not Ledger(ws.ledger_path).entries()
