"""`logit_suppression`: contract, what it changes (only the head rows), and its refusals."""

import numpy as np
import pytest
import torch

from tests.conftest import FORGET_CLASS
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.training import predict_logits
from unlearn_ops.verify import utility
from unlearn_ops.verify.probe import embeddings

SUPPRESS = {"bias": -20.0}  # the tiny digits CNN's logits can all be negative: 0 would not suppress


def test_contract(tiny_model, class_splits):
    check_contract("logit_suppression", tiny_model, class_splits, SUPPRESS)


def test_only_the_forgotten_rows_of_the_head_change(tiny_model, class_splits):
    new = run_method("logit_suppression", tiny_model, class_splits, SUPPRESS, device="cpu").model
    old_state, new_state = tiny_model.state_dict(), new.state_dict()
    for key in old_state:
        if not key.startswith("head."):
            assert torch.equal(old_state[key], new_state[key]), key
    assert torch.count_nonzero(new.head.weight[FORGET_CLASS]) == 0
    assert new.head.bias[FORGET_CLASS].item() == -20.0
    others = [c for c in range(10) if c != FORGET_CLASS]
    assert torch.equal(new.head.weight[others], tiny_model.head.weight[others])
    # features are untouched: this suppresses the logit, it does not unlearn
    x = class_splits.forget.x[:16]
    assert np.array_equal(embeddings(new, x), embeddings(tiny_model, x))


def test_the_class_is_never_predicted(tiny_model, class_splits):
    new = run_method("logit_suppression", tiny_model, class_splits, SUPPRESS, device="cpu").model
    after = utility(new, class_splits, [FORGET_CLASS])
    assert after["forget_accuracy"] == 0.0 and after["forget_class_test_accuracy"] == 0.0
    assert not (predict_logits(new, class_splits.test.x).argmax(1) == FORGET_CLASS).any()
    before = utility(tiny_model, class_splits, [FORGET_CLASS])
    assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - 1e-9


def test_item_deletion_is_refused(tiny_model, item_splits):
    with pytest.raises(NotApplicable, match="whole-class deletion only"):
        run_method("logit_suppression", tiny_model, item_splits, device="cpu")
