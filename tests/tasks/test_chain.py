"""Policy chains: an entry is a method's name or `{method: NAME, with: {settings}}`; every entry is
checked by its method's Config when the chain is read, and the last must be exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.batch import Step, chain_for, chain_step
from tasks.workspace import Workspace
from unlearn_ops.methods import is_exact

ROOT = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def workspace(tmp_path, chain: list, unlearn: dict | None = None) -> Workspace:
    params = {"models": {"m": {"store_dir": "s"}}, "policy": {"m": {"subject": chain}}, "unlearn": unlearn or {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return Workspace(tmp_path)


@pytest.mark.parametrize("model,kind", [(m, k) for m, chains in PARAMS["policy"].items() for k in chains])
def test_every_chain_of_params_yaml_reads_and_ends_exact(model, kind):
    chain = chain_for(Workspace(ROOT), model, [kind])
    assert chain and is_exact(chain[-1].method)


def test_the_item_chains_start_with_random_label_match_and_keep_its_shared_section_as_published():
    ws = Workspace(ROOT)
    for kind in ("samples", "subject"):
        first = chain_for(ws, "fmnist-classifier", [kind])[0]
        assert first == Step("random_label", {"relabel": "match", "retain_loss": "kl", "soft_weight": 5.0})
        assert ws.method_params("fmnist-classifier", "random_label", first.settings) == first.settings
    # one name per method: benchmarks and other chains still run random_label as published
    assert ws.method_params("fmnist-classifier", "random_label") == {}


def test_an_entrys_settings_go_on_top_of_the_methods_section(tmp_path):
    ws = workspace(tmp_path, [{"method": "finetune", "with": {"lr": 0.01}}, "retrain"], {"finetune": {"epochs": 2}})
    step = chain_for(ws, "m", ["subject"])[0]
    assert step == Step("finetune", {"lr": 0.01})
    assert ws.method_params("m", "finetune", step.settings) == {"epochs": 2, "lr": 0.01}


@pytest.mark.parametrize("entry,error", [
    ({"method": "finetune", "with": {"lrr": 0.1}}, "unknown finetune setting"),
    ({"method": "random_label", "with": {"relabel": "some"}}, "relabel must be one of"),
    ({"method": "finetune", "settings": {}}, "a chain entry is a method name or"),
    ({"method": "finetune", "with": [1]}, "`with` of `finetune` must map settings"),
    (3, "a chain entry is a method name or"),
])
def test_a_bad_entry_is_refused_with_the_reason(tmp_path, entry, error):
    with pytest.raises(ValueError, match=error):
        chain_for(workspace(tmp_path, [entry, "retrain"]), "m", ["subject"])


def test_an_unknown_method_or_a_chain_without_an_exact_end_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown unlearning method"):
        chain_step({"method": "finetun"}, "policy.m.subject")
    with pytest.raises(ValueError, match="must end with an exact method"):
        chain_for(workspace(tmp_path, ["retrain", {"method": "finetune"}]), "m", ["subject"])
