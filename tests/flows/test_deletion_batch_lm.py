"""Language-model subject deletions through `deletion_batch` (tiny Llama on a tiny facts world):
the same flow, ledger, gates and registry as every other model, with LM metrics and the LM pyfunc."""

from __future__ import annotations

import pytest

from flows import deletion_batch as db
from tasks.registry import CHAMPION, load_version, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import LM_MODEL, errors, lm_params, make_lm_workspace
from tests.lm_fixtures import TinyLM, tiny_lm_bundle
from unlearn_ops.data.store import SampleStore
from unlearn_ops.ledger import Ledger
from unlearn_ops.models.lm import CausalLM, same_prefix


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()   # built once per session (lru-cached), shared by the LM test modules


def request(tiny_lm: TinyLM, rid: str = "r-person") -> dict:
    return {"request_id": rid, "model": LM_MODEL, "kind": "subject", "subject_id": tiny_lm.world.members[0].subject_id}


def test_subject_request_unlearns_the_lm_and_promotes_it(tiny_lm, tmp_path, mlflow_tmp, prefect_harness):
    import mlflow

    root = make_lm_workspace(tmp_path / "ws", tiny_lm, lm_params(tiny_lm.base_dir))
    ws = Workspace.at(root)
    person_ids = set(ws.store_for(LM_MODEL).subject_ids(tiny_lm.world.members[0].subject_id))
    before = str(version_by_alias(LM_MODEL, CHAMPION).version)

    result = db.deletion_batch(requests=[request(tiny_lm)], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempt = result["models"][0]["attempts"][0]
    assert attempt["method"] == "lm_token_poisoning" and attempt["passed"]
    metrics = attempt["metrics"]["items"]
    assert metrics["forget_set_size"] == len(person_ids) == 8
    assert {"forget_fact_recall_excess", "retain_rougeL_drop", "perplexity_change", "mia_loss_auc"} <= set(metrics)
    after = str(version_by_alias(LM_MODEL, CHAMPION).version)
    assert after != before
    model, spec, _ = load_version(LM_MODEL, CHAMPION)
    assert isinstance(model, CausalLM) and spec["arch"] == "causal_lm"
    assert same_prefix(model, tiny_lm.model), "the method trains only the top blocks"
    answers = mlflow.pyfunc.load_model(f"models:/{LM_MODEL}@{CHAMPION}").predict(["Where was somebody born?"],
                                                                                params={"max_new_tokens": 4})
    assert len(answers) == 1 and isinstance(answers[0], str)
    store = SampleStore(ws.store_for(LM_MODEL).root)
    assert not person_ids & set(store.active_ids())


def test_failing_gates_fall_back_to_lm_retrain(tiny_lm, tmp_path, mlflow_tmp, prefect_harness):
    """An impossible fact-recall gate fails both attempts: the chain tries lm_retrain, the batch
    fails, and the champion and the data stay as they were."""
    impossible = {"forget_fact_recall_excess": {"max": -2.0}}
    root = make_lm_workspace(tmp_path / "ws", tiny_lm, lm_params(tiny_lm.base_dir, impossible))
    ws = Workspace.at(root)
    manifest = ws.store_for(LM_MODEL).manifest_path().read_text()
    before = str(version_by_alias(LM_MODEL, CHAMPION).version)

    result = db.deletion_batch(requests=[request(tiny_lm)], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "failed"
    assert [a["method"] for a in result["models"][0]["attempts"]] == ["lm_token_poisoning", "lm_retrain"]
    assert str(version_by_alias(LM_MODEL, CHAMPION).version) == before
    assert ws.store_for(LM_MODEL).manifest_path().read_text() == manifest
    entry = Ledger(ws.ledger_path).find("r-person")[0]
    assert entry.state == "failed" and "forget_fact_recall_excess" in entry.reason


def test_lm_retrain_failing_utility_gates_still_erases_the_person(tiny_lm, tmp_path, mlflow_tmp, prefect_harness):
    """Issue 19 item 6, as `make demo-llm` showed it: lm_retrain failed `retain_rougeL_drop` and the
    person's request ended `failed`. Utility gates inform an exact method: impossible ones fail
    lm_token_poisoning, and lm_retrain is promoted with the regression flagged."""
    gates = {"forget_fact_recall_excess": {"max": 1.0}, "retain_rougeL_drop": {"max": -2.0},
             "perplexity_change": {"max": -2.0}}
    root = make_lm_workspace(tmp_path / "ws", tiny_lm, lm_params(tiny_lm.base_dir, gates))
    ws = Workspace.at(root)
    before = str(version_by_alias(LM_MODEL, CHAMPION).version)

    result = db.deletion_batch(requests=[request(tiny_lm)], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    poisoning, retrain = result["models"][0]["attempts"]
    assert (poisoning["status"], retrain["status"]) == ("failed", "passed")
    assert sorted(r.split()[0] for r in retrain["regressions"]) == ["perplexity_change", "retain_rougeL_drop"]
    assert str(version_by_alias(LM_MODEL, CHAMPION).version) != before
    entry = Ledger(ws.ledger_path).find("r-person")[0]
    assert entry.state == "registered" and entry.reason == "promoted with utility regression: " + ", ".join(
        retrain["regressions"])


def test_lm_metrics_refuse_a_class_deletion(tiny_lm):
    """Intake rejects class requests for an LM (its policy has no `class` chain); the metrics refuse too."""
    from unlearn_ops.verify.production import Evaluation, lm_metrics

    forget_class = int(tiny_lm.splits.forget.y[0])
    e = Evaluation(tiny_lm.model, tiny_lm.model, tiny_lm.splits, tiny_lm.store, classes=[forget_class], item_ids=set())
    with pytest.raises(ValueError, match="item requests"):
        lm_metrics(e)
