"""The retrain reference is cached in MLflow per (base version, forget set, seed, schedule)."""

from __future__ import annotations

import pytest
import torch

import tasks.reference as reference_mod
from tasks.reference import EXPERIMENT, find_reference, forget_set_hash, reference, reference_key
from tests.conftest import TINY_SPEC

FAST = {"epochs": 3, "lr": 3e-3, "batch_size": 64}


def test_second_call_reuses_the_logged_reference(mlflow_tmp, tiny_model, class_splits, monkeypatch):
    first = reference(tiny_model, TINY_SPEC, class_splits, base_version="1", seed=0, params=FAST,
                      forget_classes=[3], device="cpu")
    assert not first.reused and first.seconds > 0
    assert first.metrics["forget_accuracy"] < 0.2                   # it is a model without class 3

    def no_training(*args, **kwargs):
        raise AssertionError("the cached reference must be reused, not retrained")

    monkeypatch.setattr(reference_mod, "run_method", no_training)
    again = reference(tiny_model, TINY_SPEC, class_splits, base_version="1", seed=0, params=FAST,
                      forget_classes=[3], device="cpu")
    assert again.reused and again.run_id == first.run_id
    assert again.seconds == pytest.approx(first.seconds)            # speed-ups stay honest on reuse
    assert again.metrics["forget_accuracy"] == pytest.approx(first.metrics["forget_accuracy"])
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # another seed, base version or schedule is another reference
    for other in (dict(base_version="2", seed=0, params=FAST), dict(base_version="1", seed=1, params=FAST),
                  dict(base_version="1", seed=0, params={**FAST, "epochs": 4})):
        assert find_reference(reference_key(forget_ids=class_splits.forget.ids, **other), EXPERIMENT) is None


def test_key_is_order_independent_and_resolves_defaults():
    assert forget_set_hash(["b", "a"]) == forget_set_hash(["a", "b"]) != forget_set_hash(["a"])
    spelled = reference_key("3", ["x"], 0, {"epochs": 3})
    assert spelled == reference_key("3", ["x"], 0, {})          # 3 epochs is the retrain default
    assert spelled["seed"] == "0" and spelled["base_version"] == "3"
