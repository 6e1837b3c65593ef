"""Issue 19 items 1–3 in the flow: after promotion the batch collects the superseded data
versions, retires the models trained on the forget set, deletes its work folders' weights and
scans everything the project keeps; the certificate carries the scan (0 copies expected)."""

from __future__ import annotations

import json
import shutil

import mlflow
import pytest
from typer.testing import CliRunner

from flows import deletion_batch as db
from flows.cli import app
from tasks.registry import RetiredModelError, load_version
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL, errors, make_workspace, version_store
from unlearn_ops.audit import AuditLog
from unlearn_ops.ledger import Ledger

SUBJECT = {"request_id": "r-subject", "model": MODEL, "kind": "subject", "subject_id": "subj-00007"}


def versioned_workspace(tmp_path, tiny_model):
    return version_store(make_workspace(tmp_path / "ws", tiny_model))


def test_the_batch_erases_the_subject_everywhere_and_retires_the_old_model(tmp_path, tiny_model, mlflow_tmp,
                                                                           prefect_harness):
    root = versioned_workspace(tmp_path, tiny_model)
    ws = Workspace.at(root)
    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)
    assert result["state"] == "done", result
    batch = result["batch_id"]

    erasure = result["erasure"]
    scan = erasure["scan"]
    assert scan["passed"] and scan["copies"] == 0 and scan["samples"] == len(ws.store_for(MODEL).subject_ids(
        "subj-00007"))
    names = {loc["name"] for loc in scan["locations"]}
    assert {"DVC cache", "DVC remote local"} <= names and any(n.startswith("var/") for n in names)
    assert any("scikit-learn" in n["path"] for n in scan["outside_reach"])  # the digits' upstream, named
    # the store version before the purge held the subject: its shard objects are gone from cache and remote
    removed = {e["location"] for e in erasure["collected"]["removed"]}
    assert removed == {"DVC cache", "DVC remote local"}
    # the work folders' weights (pre-deletion champion, attempts) went with the batch; the IDs stay
    work = ws.runs / batch / MODEL
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == [] and (work / "forget_ids.json").is_file()
    assert any(p.endswith("/champion") for p in erasure["work_deleted"])
    # the build's model folder held v1's weights (trained on the subject): gone, and searched for
    [build] = erasure["builds_deleted"]
    assert build["path"] == f"models/{MODEL}" and "v1 weights" in build["holds"] and not (root / build["path"]).exists()
    assert scan["weight_files"] >= 1

    # the model trained on the subject is retired: no alias, a clear error naming the batch
    [retired] = result["models"][0]["retired"]
    assert retired["version"] == "1" and retired["retired_by"] == batch and retired["weights_deleted_at"]
    with pytest.raises(RetiredModelError, match=f"retired by batch {batch}"):
        load_version(MODEL, "1")
    with pytest.raises(Exception, match=batch):
        mlflow.pyfunc.load_model(f"models:/{MODEL}/1")

    cert = json.loads((ws.certificates / f"{batch}.json").read_text())
    assert cert["outcome"] == "REGISTERED" and cert["erasure"]["scan"]["copies"] == 0
    md = (ws.certificates / f"{batch}.md").read_text()
    assert "- Erasure scan: **PASS** — 0 copies" in md and "outside the pipeline's reach" in md
    assert f"v1 (retired by `{batch}`" in md
    audit = CliRunner().invoke(app, ["audit", "erasure", batch, "--root", str(root)])
    assert audit.exit_code == 0, audit.output
    assert AuditLog(ws.audit_log, ws.certificates).verify().ok


def test_a_copy_the_batch_cannot_reach_makes_the_certificate_say_erasure_incomplete(tmp_path, tiny_model,
                                                                                     mlflow_tmp, prefect_harness):
    """A scan that cannot fail is no scan: a copy of the store left in var/ (as a benchmark's cache
    would) is found, named in the certificate, and the batch does not close as done."""
    root = versioned_workspace(tmp_path, tiny_model)
    ws = Workspace.at(root)
    shutil.copytree(root / "data" / "store" / "digits", root / "var" / "leak" / "digits")
    n = len(ws.store_for(MODEL).subject_ids("subj-00007"))
    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)

    scan = result["erasure"]["scan"]
    assert not scan["passed"] and scan["copies"] == n
    [found] = [f for loc in scan["locations"] for f in loc["found"]]
    assert found["path"].startswith("var/leak/digits/") and found["samples"] == n
    assert result["state"] == "failed"
    cert = json.loads((ws.certificates / f"{result['batch_id']}.json").read_text())
    assert cert["outcome"] == "REGISTERED, ERASURE INCOMPLETE"
    md = (ws.certificates / f"{result['batch_id']}.md").read_text()
    assert f"**FAIL** — {n} copies" in md and "Copy found: `var/leak/digits/" in md
    assert Ledger(ws.ledger_path).find("r-subject")[0].state == "registered"  # the model and store did forget
    audit = CliRunner().invoke(app, ["audit", "erasure", result["batch_id"], "--root", str(root)])
    assert audit.exit_code == 1


def test_a_build_output_left_with_deleted_weights_fails_the_scan(tmp_path, tiny_model, mlflow_tmp, prefect_harness,
                                                                  monkeypatch):
    """The pre-change state, on purpose: the batch no longer deletes the build output that holds the
    retired version's weights, and the scan finds them by hash."""
    root = versioned_workspace(tmp_path, tiny_model)
    monkeypatch.setattr(db, "delete_builds_task", lambda root: [])
    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)
    scan = result["erasure"]["scan"]
    assert not scan["passed"] and result["state"] == "failed"
    [found] = [f for loc in scan["locations"] for f in loc["found"]]
    assert found["path"] == f"models/{MODEL}/model.safetensors" and found["how"] == "whole file"
    md = (Workspace.at(root).certificates / f"{result['batch_id']}.md").read_text()
    assert f"Copy found: `models/{MODEL}/model.safetensors`: weights of a deleted model version" in md
