"""The deletion_batch flow on a sharded classifier (SISA): a subject request is honoured exactly by
`sharded_retrain` (its certificate names the retrained member and slice), a class request by
`neuron_perturbation` applied to every member, and the policy must end sharded chains in
`sharded_retrain`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows import deletion_batch as db
from flows.params import load_params
from tasks.batch import chain_for
from tasks.registry import CHAMPION, load_version, log_and_register, set_alias, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL, PARAMS, errors, make_repo
from tests.sharded_helpers import SCHEDULE, SHARDS, SLICES, build_sharded
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store
from unlearn_ops.families import family
from unlearn_ops.models.sharded import ShardedEnsemble

SUBJECT = {"request_id": "r-subject", "model": MODEL, "kind": "subject", "subject_id": "subj-00007"}
CLASS = {"request_id": "r-class", "model": MODEL, "kind": "class", "class_label": 3}
PRODUCTION = load_params()


def sharded_params() -> dict:
    """The tiny deployment's params with a sharded build: params.yaml's subject gates (the power
    gate refuses to judge an approximate method on a subject), its class chain's first method,
    settings and gates, and chains ending in `sharded_retrain`."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["models"][MODEL]["build"] = "train"
    params["train"] = {**SCHEDULE, "shards": SHARDS, "slices": SLICES, "pool_fraction": 0.0, "pool_epochs": 0}
    params["policy"][MODEL] = {"class": ["neuron_perturbation", "sharded_retrain"],
                               "samples": ["finetune", "sharded_retrain"], "subject": ["finetune", "sharded_retrain"]}
    params["unlearn"]["neuron_perturbation"] = PRODUCTION["unlearn"]["neuron_perturbation"]
    params["gates"]["class"] = PRODUCTION["gates"]["class"]
    params["gates"]["subject"] = {**params["gates"]["subject"], "forget_set_size": {"min": 100}}
    return params


def make_sharded_workspace(root: Path) -> Path:
    root = make_repo(root, sharded_params())
    store = build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    model = build_sharded(store)
    directory = family("classifier").save(model, model.spec(), root / "models" / MODEL)
    version = log_and_register(directory, name=MODEL, family="classifier", experiment="build", run_name="build",
                               tags={"lineage": "build", "method": "train"})
    set_alias(MODEL, CHAMPION, version)
    return root


@pytest.fixture()
def sharded_workspace(tmp_path, mlflow_tmp, prefect_harness) -> Path:
    return make_sharded_workspace(tmp_path / "ws")


def champion_model() -> ShardedEnsemble:
    model, _, _ = load_version(MODEL, CHAMPION)
    assert isinstance(model, ShardedEnsemble)
    return model


def test_a_subject_request_is_honoured_by_sharded_retrain(sharded_workspace):
    ws = Workspace.at(sharded_workspace)
    forgotten = set(ws.store_for(MODEL).subject_ids("subj-00007"))
    before = champion_model()
    where = dict(zip(before.state().map.ids, before.state().map.shard.tolist(), strict=True))
    [member] = {where[i] for i in forgotten}

    result = db.deletion_batch(requests=[SUBJECT], root=str(sharded_workspace))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    final = result["models"][0]["attempts"][-1]
    assert final["method"] == "sharded_retrain" and final["passed"] is True
    [hit] = final["details"]["retrained"]
    assert hit["member"] == member and hit["removed"] == len(forgotten)
    assert final["details"]["untouched"] == [i for i in range(SHARDS) if i != member]
    # the certificate says which member was retrained from which slice
    md = (ws.certificates / f"{result['batch_id']}.md").read_text()
    assert f"member {member} from slice {hit['from_slice'] + 1} of {SLICES}" in md
    cert = json.loads((ws.certificates / f"{result['batch_id']}.json").read_text())
    assert cert["models"][0]["attempts"][-1]["details"]["retrained"] == [hit]
    # the promoted champion is the sharded model without the subject: map, checkpoints, other members
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(MODEL, version_by_alias(MODEL, CHAMPION).version).tags
    assert tags["method"] == "sharded_retrain" and tags["verdict"] == "pass"
    after = champion_model()
    assert not forgotten & set(after.state().map.ids)
    assert len(after.state().checkpoints) == SHARDS * (SLICES - 1)
    for i in final["details"]["untouched"]:
        assert all(a.equal(b) for a, b in zip(after.members[i].state_dict().values(),
                                              before.members[i].state_dict().values(), strict=True))


def test_a_class_request_is_honoured_by_neuron_perturbation_on_every_member(sharded_workspace):
    ws = Workspace.at(sharded_workspace)
    result = db.deletion_batch(requests=[CLASS], root=str(sharded_workspace))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    attempts = result["models"][0]["attempts"]
    assert attempts[0]["method"] == "neuron_perturbation" and attempts[0]["passed"] is True, attempts
    assert attempts[0]["details"]["members"] == list(range(SHARDS))
    assert "applied to every member" in (ws.certificates / f"{result['batch_id']}.md").read_text()
    after = champion_model()
    assert not set(ws.store_for(MODEL).class_ids(3)) & set(after.state().map.ids)
    assert not after.state().checkpoints  # every member was trained on the class from its first slice


def test_a_sharded_models_chain_must_end_in_sharded_retrain(tmp_path):
    params = sharded_params()
    params["policy"][MODEL]["subject"] = ["finetune", "retrain"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="must end with `sharded_retrain`"):
        chain_for(Workspace.at(tmp_path), MODEL, ["subject"])
    assert chain_for(Workspace.at(tmp_path), MODEL, ["class"])[-1].method == "sharded_retrain"
    monolithic = yaml.safe_load(yaml.safe_dump(PARAMS))
    monolithic["policy"][MODEL]["subject"] = ["finetune", "sharded_retrain"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(monolithic))
    with pytest.raises(ValueError, match="is not sharded"):
        chain_for(Workspace.at(tmp_path), MODEL, ["subject"])
