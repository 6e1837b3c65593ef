"""`scrub`: contract, class and item deletion on the tiny digits CNN."""

import pytest
import torch

from tests.methods.behaviour import check_class_deletion, check_item_deletion
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods._loops import distill_kl

FAST: dict = {}  # the production defaults are fast on the tiny CNN


def test_contract_class(tiny_model, class_splits):
    check_contract("scrub", tiny_model, class_splits, FAST)


def test_contract_item(tiny_model, item_splits):
    check_contract("scrub", tiny_model, item_splits, FAST)


def test_forgets_a_class_and_keeps_the_rest(tiny_model, class_splits):
    # forget accuracy measured 0.01-0.15 (forgotten-class test samples up to 0.21) over four base
    # models: the bound keeps twice that; the KL test below is the mechanism
    check_class_deletion("scrub", tiny_model, class_splits, FAST, max_forget_accuracy=0.45)


def test_item_deletion_keeps_utility(tiny_model, item_splits):
    check_item_deletion("scrub", tiny_model, item_splits, FAST, loss_must_rise=False)


def test_student_departs_from_the_teacher_on_the_forget_set_only(tiny_model, class_splits):
    """The max-steps push the student away from the teacher on D_f; the min-steps keep it close on D_r."""
    from unlearn_ops.training import predict_logits

    student = run_method("scrub", tiny_model, class_splits, FAST, device="cpu").model

    def kl(part):
        return distill_kl(predict_logits(student, part.x), predict_logits(tiny_model, part.x), 1.0).item()

    assert kl(class_splits.forget) > 10 * kl(class_splits.retain.sample(400, 0))


def test_distillation_loss_is_zero_for_identical_logits_and_positive_otherwise():
    a = torch.randn(8, 10)
    assert distill_kl(a, a, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_kl(a, torch.randn(8, 10), 4.0).item() > 0


def test_more_max_epochs_than_epochs_is_an_error(tiny_model, class_splits):
    with pytest.raises(ValueError, match="max_epochs"):
        run_method("scrub", tiny_model, class_splits, {"epochs": 1, "max_epochs": 2}, device="cpu")
