"""The `unlearn` command line: submit/list requests, audit verification, status."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app, main
from tests.flows.conftest import MODEL, PARAMS
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store

runner = CliRunner()


def make_root(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    build_store(load_digits(), tmp_path / "data" / "store" / "digits", max_subject_size=10)
    return tmp_path


def test_submit_accepts_and_rejects_with_exit_codes(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    monkeypatch.setattr("tasks.registry.is_registered", lambda name: name == MODEL)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"request_id": "cli-1", "model": MODEL, "kind": "class", "class_label": 2}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: digits-classifier\nkind: subject\nsubject_id: subj-99999\n")

    ok = runner.invoke(app, ["request", "submit", str(good), "--root", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "accepted cli-1" in ok.output

    rejected = runner.invoke(app, ["request", "submit", str(bad), "--root", str(root)])
    assert rejected.exit_code == 1
    assert "unknown data subject" in rejected.output
    assert bad.exists()  # the user's file stays; a copy is quarantined with its reason
    reasons = list((root / "data" / "requests" / "quarantine").glob("*.reason.txt"))
    assert len(reasons) == 1 and "unknown data subject" in reasons[0].read_text()

    listed = runner.invoke(app, ["request", "list", "--json", "--root", str(root)])
    rows = json.loads(listed.output)
    assert {r["state"] for r in rows} == {"validated", "rejected"}
    only = runner.invoke(app, ["request", "list", "--state", "rejected", "--root", str(root)])
    assert "unknown data subject" in only.output and "cli-1" not in only.output
    wrong = runner.invoke(app, ["request", "list", "--state", "nonsense", "--root", str(root)])
    assert wrong.exit_code != 0


def test_audit_verify_on_an_empty_log_and_show_missing(tmp_path):
    ok = runner.invoke(app, ["audit", "verify", "--root", str(tmp_path)])
    assert ok.exit_code == 0 and "0 certificates" in ok.output
    missing = runner.invoke(app, ["audit", "show", "batch-x", "--root", str(tmp_path)])
    assert missing.exit_code == 1


def test_audit_lm_facts_refuses_a_model_that_is_not_a_language_model(tmp_path):
    make_root(tmp_path)
    out = runner.invoke(app, ["audit", "lm-facts", "person-002", "--model", MODEL, "--root", str(tmp_path)])
    assert out.exit_code == 2 and "not a language model" in out.output


def test_status_without_models(mlflow_tmp):
    out = runner.invoke(app, ["status"])
    assert out.exit_code == 0 and "no registered models" in out.output


def test_submit_answers_every_file_even_after_a_hostile_one(tmp_path, monkeypatch):
    """The issue's poison pill: a 30 KB JSON request nested thousands of levels deep, between good files."""
    root = make_root(tmp_path)
    monkeypatch.setattr("tasks.registry.is_registered", lambda name: name == MODEL)
    first, last = tmp_path / "first.json", tmp_path / "last.yaml"
    first.write_text(json.dumps({"request_id": "cli-first", "model": MODEL, "kind": "class", "class_label": 2}))
    deep = tmp_path / "deep.json"
    deep.write_text('{"request_id": "cli-deep", "model": "' + MODEL + '", "x": ' + "[" * 15_000 + "]" * 15_000 + "}")
    assert 29_000 < deep.stat().st_size < 31_000
    last.write_text(f"request_id: cli-last\nmodel: {MODEL}\nkind: subject\nsubject_id: subj-00003\n")

    out = runner.invoke(app, ["request", "submit", str(first), str(deep), str(last), "--root", str(root)])
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
    lines = out.output.strip().splitlines()
    assert len(lines) == 3
    assert "accepted cli-first" in out.output and "accepted cli-last" in out.output
    assert "REJECTED invalid-cli-deep (deep.json): nested deeper than 8 levels" in out.output

    rows = {r["request_id"]: r for r in json.loads(runner.invoke(app, ["request", "list", "--json", "--root",
                                                                        str(root)]).output)}
    assert rows["cli-first"]["state"] == rows["cli-last"]["state"] == "validated"
    assert rows["invalid-cli-deep"]["state"] == "rejected"
    assert rows["invalid-cli-deep"]["request"]["rejected_document"]["size_bytes"] == deep.stat().st_size
    (reason,) = (root / "data" / "requests" / "quarantine").glob("*deep.json.reason.txt")
    assert "nested deeper than 8 levels" in reason.read_text()
    assert deep.exists()  # the user's file stays


def test_two_models_on_one_store_stop_the_command_before_any_request(tmp_path, monkeypatch, capsys):
    # a GAN on the classifier's store: a certificate for one model would be false for the other
    root = make_root(tmp_path)
    models = {**PARAMS["models"], "digits-gan": {**PARAMS["models"][MODEL], "family": "gan"}}
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "models": models}))
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"request_id": "cli-1", "model": MODEL, "kind": "class", "class_label": 2}))
    monkeypatch.setattr(sys, "argv", ["unlearn", "request", "submit", str(request), "--root", str(root)])
    with pytest.raises(SystemExit) as stopped:
        main()
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith("error: params.yaml: models.digits-classifier and models.digits-gan are trained on the same")
    assert "Traceback" not in err and not (root / "data" / "requests").exists()
