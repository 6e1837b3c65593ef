"""`random_label`: contract, class and item deletion on the tiny digits CNN."""

import torch

from tests.methods.behaviour import check_class_deletion, check_item_deletion
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods._loops import random_wrong_labels
from unlearn_ops.training import per_sample_loss

FAST: dict = {}  # the production defaults (params.yaml mirrors them) are fast on the tiny CNN


def test_contract_class(tiny_model, class_splits):
    check_contract("random_label", tiny_model, class_splits, FAST)


def test_contract_item(tiny_model, item_splits):
    check_contract("random_label", tiny_model, item_splits, FAST)


def test_forgets_a_class_and_keeps_the_rest(tiny_model, class_splits):
    check_class_deletion("random_label", tiny_model, class_splits, FAST)


def test_item_deletion_raises_forget_loss_and_keeps_utility(tiny_model, item_splits):
    check_item_deletion("random_label", tiny_model, item_splits, FAST)


def test_random_labels_are_always_wrong_and_cover_the_other_classes():
    y = torch.arange(10).repeat(200)
    wrong = random_wrong_labels(y, 10, seed=0)
    assert not (wrong == y).any()
    assert set(wrong[y == 3].tolist()) == set(range(10)) - {3}
    assert torch.equal(wrong, random_wrong_labels(y, 10, seed=0))


def test_repair_steps_refit_the_retain_set_after_relabelling(tiny_model, item_splits):
    """repair_steps = 0 is the published RL; repair steps (true labels, retain only) lower the
    retain loss that the wrong labels raised, and item deletion still keeps utility."""
    plain = run_method("random_label", tiny_model, item_splits, {"repair_steps": 0}, device="cpu")
    default = run_method("random_label", tiny_model, item_splits, {}, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 default.model.state_dict().values(), strict=True))
    repaired = run_method("random_label", tiny_model, item_splits, {"repair_steps": 40}, device="cpu")
    loss = lambda r: per_sample_loss(r.model, item_splits.retain).mean().item()  # noqa: E731
    assert loss(repaired) < loss(plain)
    assert any("repair step 40/40" in line for line in repaired.log)
    check_item_deletion("random_label", tiny_model, item_splits, {"repair_steps": 40}, loss_must_rise=False)
