"""params.yaml's `unlearn` section builds into the methods' Configs, lists only what differs from
their defaults, and exact methods take their schedule from the model's build section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tasks.workspace import Workspace
from unlearn_ops.methods import METHODS, is_exact, method_params
from unlearn_ops.methods.base import make_config

ROOT = Path(__file__).resolve().parents[2]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())

# The settings the exact methods ran with before their schedules moved out of `unlearn` (the
# sections as they were, commit 6262da0): the pipeline must still build exactly these Configs. The
# classifier's build became sharded afterwards (bench sharded's warm-S4-R4-E2): its exact method is
# `sharded_retrain`, each member repeating the build's schedule, warm start included.
BEFORE = {
    ("fmnist-classifier", "sharded_retrain"): {"epochs": 2, "lr": 0.001, "batch_size": 128, "seed": 0,
                                               "pool_epochs": 10},
    ("mnist-gan", "gan_retrain"): {"epochs": 30, "batch_size": 64, "lr_g": 0.0005, "lr_d": 0.0002, "beta1": 0.5,
                                   "retrain_reference": True, "reference_epochs": 10, "reference_lr": 0.001,
                                   "reference_batch_size": 128, "seed": 0},
    ("smollm2-facts", "lm_retrain"): {"base_dir": "data/models/smollm2-135m", "epochs": 6, "lr": 0.002, "batch_size": 8,
                                      "weight_decay": 0.0, "max_len": 64, "grad_clip": 1.0, "train_head": False,
                                      "seed": 0, "lr_decay": "linear",   # the decay: issue 23, build and retrain alike
                                      "general_texts": 480},   # and the general corpus (issue 23, item 2)
    ("rt-sentiment", "text_retrain"): {"epochs": 20, "lr": 0.001, "batch_size": 128, "seed": 0},
}


def settings(method: str, params: dict) -> dict:
    return dataclasses.asdict(make_config(METHODS[method].Config, params))


@pytest.mark.parametrize("name", sorted(PARAMS["unlearn"]))
def test_every_unlearn_section_builds_its_config_and_differs_from_the_defaults(name):
    assert name in METHODS, f"unlearn.{name}: no such method; registered: {sorted(METHODS)}"
    section = PARAMS["unlearn"][name] or {}
    make_config(METHODS[name].Config, section)  # unknown keys raise
    defaults = {f.name: f.default for f in dataclasses.fields(METHODS[name].Config)}
    same = sorted(k for k, v in section.items() if v == defaults[k])
    assert not same, f"unlearn.{name} repeats the Config defaults of {same}: document them in the Config instead"


def test_an_unknown_setting_or_method_is_refused():
    with pytest.raises(ValueError, match="unknown neuron_perturbation setting"):
        make_config(METHODS["neuron_perturbation"].Config, {"k_pp": 10})
    with pytest.raises(KeyError, match="unknown unlearning method"):
        method_params("neuron_perturbaton", {}, None)


@pytest.mark.parametrize("model,method", sorted(BEFORE))
def test_exact_methods_run_with_the_settings_they_had_before(model, method):
    params = Workspace(ROOT).method_params(model, method)
    assert settings(method, params) == settings(method, BEFORE[(model, method)])


def test_every_policy_chain_ends_in_an_exact_method_scheduled_by_its_models_build():
    ws = Workspace(ROOT)
    for model, chains in PARAMS["policy"].items():
        build = PARAMS[PARAMS["models"][model]["build"]]
        for chain in chains.values():
            last = chain[-1]
            assert is_exact(last), f"policy.{model} must end in an exact method: {chain}"
            schedule = METHODS[last].schedule_from_build(build)
            assert schedule and ws.method_params(model, last) == {**schedule, **(PARAMS["unlearn"].get(last) or {})}


def test_schedule_from_build_follows_the_build_and_overrides_win():
    train = {"epochs": 7, "lr": 0.01, "batch_size": 32, "seed": 4, "arch": "cnn"}
    assert method_params("retrain", None, train) == {"epochs": 7, "lr": 0.01, "batch_size": 32, "seed": 4}
    assert method_params("retrain", {"epochs": 1}, train)["epochs"] == 1
    assert method_params("text_retrain", None, train) == {"epochs": 7, "lr": 0.01, "batch_size": 32, "seed": 4}
    gan = {"seed": 2, "gan": {"epochs": 5, "batch_size": 16, "lr_g": 1e-3, "lr_d": 1e-4, "beta1": 0.4, "z_dim": 8},
           "reference": {"epochs": 2, "lr": 3e-3, "batch_size": 64, "min_test_accuracy": 0.9}}
    assert method_params("gan_retrain", None, gan) == {
        "epochs": 5, "batch_size": 16, "lr_g": 1e-3, "lr_d": 1e-4, "beta1": 0.4, "reference_epochs": 2,
        "reference_lr": 3e-3, "reference_batch_size": 64, "seed": 2}
    llm = {"base_dir": "b", "train": {"epochs": 1, "lr": 0.1, "batch_size": 2, "weight_decay": 0.0, "max_len": 32,
                                      "grad_clip": 0.5, "train_head": True, "seed": 3, "lr_decay": "none",
                                      "general_texts": 5, "device": "auto"}}
    assert method_params("lm_retrain", None, llm) == {"base_dir": "b", **{k: v for k, v in llm["train"].items()
                                                                         if k != "device"}}
    # approximate methods ignore the build; without a build section only the overrides apply
    assert method_params("finetune", {"epochs": 2}, train) == {"epochs": 2}
    assert method_params("retrain", {"epochs": 2}, None) == {"epochs": 2}


def test_a_build_section_missing_part_of_the_schedule_is_an_error():
    with pytest.raises(ValueError, match=r"retrain: the model's build section lacks \['seed'\]"):
        method_params("retrain", None, {"epochs": 3, "lr": 0.001, "batch_size": 128})
    with pytest.raises(ValueError, match="`reference` of the model's build section"):
        method_params("gan_retrain", None, {"seed": 0, "gan": {"epochs": 1, "batch_size": 1, "lr_g": 1, "lr_d": 1,
                                                                "beta1": 0.5}})


def test_a_build_name_params_yaml_lacks_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {"m": {"store_dir": "s", "build": "nope"}}}))
    with pytest.raises(KeyError, match="models.m.build names `nope`"):
        Workspace(tmp_path).method_params("m", "retrain")
