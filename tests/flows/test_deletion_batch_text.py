"""Text-classifier deletions through `deletion_batch` (tiny BERT on a synthetic movie corpus): a
movie (`concept`) and a class, with the same ledger, gates and registry as every other model."""

from __future__ import annotations

import numpy as np

from flows import deletion_batch as db
from tasks.registry import CHAMPION, load_version, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import TEXT_MODEL, errors, make_text_workspace, text_params
from unlearn_ops.data.text_store import group_ids
from unlearn_ops.ledger import Ledger
from unlearn_ops.models.text import TextClassifier


def test_concept_request_forgets_a_movie_and_promotes_the_model(tmp_path, mlflow_tmp, prefect_harness):
    import mlflow

    root = make_text_workspace(tmp_path / "ws", text_params())
    ws = Workspace.at(root)
    movie_ids = set(group_ids(ws.store_for(TEXT_MODEL), "jaws"))
    before = str(version_by_alias(TEXT_MODEL, CHAMPION).version)

    result = db.deletion_batch(requests=[{"request_id": "r-movie", "model": TEXT_MODEL, "kind": "concept",
                                          "concept": "jaws"}], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempt = result["models"][0]["attempts"][0]
    assert attempt["method"] == "concept_poisoning" and attempt["passed"]
    assert attempt["metrics"]["items"]["forget_set_size"] == len(movie_ids) > 50
    assert attempt["metrics"]["items"]["retain_evaluated"] == 150  # batch.verify_retain: a seeded sample
    assert str(version_by_alias(TEXT_MODEL, CHAMPION).version) != before
    model, spec, _ = load_version(TEXT_MODEL, CHAMPION)
    assert isinstance(model, TextClassifier) and spec["arch"] == "text"
    probs = mlflow.pyfunc.load_model(f"models:/{TEXT_MODEL}@{CHAMPION}").predict(["a great and moving film", "dull"])
    assert np.asarray(probs).shape == (2, 2) and np.allclose(np.asarray(probs).sum(1), 1.0, atol=1e-5)
    store = ws.store_for(TEXT_MODEL)
    assert not movie_ids & set(store.active_ids())
    assert Ledger(ws.ledger_path).find("r-movie")[0].state == "registered"


def test_class_request_meets_the_production_class_gates(tmp_path, mlflow_tmp, prefect_harness):
    """The class gates of params.yaml `text_gates.class`, unchanged: concept_poisoning forgets the
    positive class of the synthetic corpus and keeps the negative one."""
    from flows.params import load_params

    root = make_text_workspace(tmp_path / "ws", text_params({"class": load_params()["text_gates"]["class"]}))
    ws = Workspace.at(root)

    result = db.deletion_batch(requests=[{"request_id": "r-class", "model": TEXT_MODEL, "kind": "class",
                                          "class_label": "positive"}], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempt = result["models"][0]["attempts"][0]
    assert attempt["method"] == "concept_poisoning" and attempt["passed"], attempt
    assert attempt["metrics"]["class"]["forget_accuracy"] <= 0.02
    assert not set(ws.store_for(TEXT_MODEL).class_ids(1)) & set(ws.store_for(TEXT_MODEL).active_ids())


def test_a_small_concept_falls_back_to_the_exact_text_retrain(tmp_path, mlflow_tmp, prefect_harness):
    """A forget-set-size gate larger than the movie: no population test can clear an approximate
    method on so few snippets, so concept_poisoning is skipped without running and the chain ends in
    text_retrain (exact: power gates do not apply)."""
    items = {"forget_set_size": {"min": 1000}, "test_accuracy_drop": {"max": 0.05}}
    root = make_text_workspace(tmp_path / "ws", text_params({"class": {}, "concept": items, "subject": items}))

    result = db.deletion_batch(requests=[{"request_id": "r-movie", "model": TEXT_MODEL, "kind": "concept",
                                          "concept": "alien"}], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempts = result["models"][0]["attempts"]
    assert [(a["method"], a["status"]) for a in attempts] == [("concept_poisoning", "skipped"),
                                                              ("text_retrain", "passed")]
    assert attempts[0]["reason"].startswith("forget_set_size ") and attempts[0]["reason"].endswith(" < 1000")
