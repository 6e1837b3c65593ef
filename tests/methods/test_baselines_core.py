"""Contract and behaviour of the core methods: retrain (exact), finetune, noop."""

import pytest

from tests.conftest import FORGET_CLASS
from tests.methods.contract import check_contract
from unlearn_ops.methods import METHODS, run_method
from unlearn_ops.verify import utility

FAST = {"retrain": {"epochs": 3, "lr": 3e-3, "batch_size": 64}, "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 64},
        "noop": {}}


@pytest.mark.parametrize("name", sorted(FAST))
def test_contract(name, tiny_model, class_splits):
    check_contract(name, tiny_model, class_splits, FAST[name])


def test_registry_is_explicit_and_named_by_file():
    for name, module in METHODS.items():
        assert module.__name__.rsplit(".", 1)[-1] == name


def test_unknown_method_is_a_clear_error(tiny_model, class_splits):
    with pytest.raises(KeyError, match="unknown unlearning method"):
        run_method("nope", tiny_model, class_splits)


def test_retrain_forgets_the_class_and_keeps_the_rest(tiny_model, class_splits):
    result = run_method("retrain", tiny_model, class_splits, {"epochs": 15, "lr": 3e-3, "batch_size": 64}, device="cpu")
    before = utility(tiny_model, class_splits, [FORGET_CLASS])
    after = utility(result.model, class_splits, [FORGET_CLASS])
    assert before["forget_accuracy"] > 0.9
    assert after["forget_accuracy"] <= 0.05
    assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - 0.05
    assert result.seconds > 0
