"""`salun`: contract, saliency mask, class and item deletion on the tiny digits CNN."""

import pytest
import torch

from tests.methods.behaviour import check_class_deletion, check_item_deletion
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods.salun import top_fraction_masks

FAST: dict = {}  # the production defaults (params.yaml mirrors them) are fast on the tiny CNN
# Utility bounds, as for random_label: measured over four base models (the committed one, seeds
# 1-3) class deletion −3.8 to −10.6 retained-class points, item deletion −2.8 to −5.6 test points.
CLASS_TOLERANCE, ITEM_TOLERANCE = 0.25, 0.12


def test_contract_class(tiny_model, class_splits):
    check_contract("salun", tiny_model, class_splits, FAST)


def test_contract_item(tiny_model, item_splits):
    check_contract("salun", tiny_model, item_splits, FAST)


def test_forgets_a_class_and_keeps_the_rest(tiny_model, class_splits):
    check_class_deletion("salun", tiny_model, class_splits, FAST, tolerance=CLASS_TOLERANCE)


def test_item_deletion_raises_forget_loss_and_keeps_utility(tiny_model, item_splits):
    check_item_deletion("salun", tiny_model, item_splits, FAST, tolerance=ITEM_TOLERANCE)


def test_mask_keeps_the_top_fraction_over_all_tensors():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.0], [2.0, 6.0]])}
    masks = top_fraction_masks(scores, 3 / 7)
    assert masks["a"].tolist() == [1.0, 0.0, 0.0]
    assert masks["b"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("extra", [{}, {"repair_steps": 20}, {"guard_steps": 10}])
def test_only_masked_weights_move(tiny_model, class_splits, extra):
    """Relabel, guard and repair steps alike move only the masked weights."""
    params = {"mask_fraction": 0.2, **extra}
    result = run_method("salun", tiny_model, class_splits, params, device="cpu")
    before = dict(tiny_model.named_parameters())
    moved = sum(int((p.detach() != before[n].detach()).sum()) for n, p in result.model.named_parameters())
    assert 0 < moved <= result.details["masked_weights"]
    assert result.details["masked_weights"] == round(0.2 * result.details["total_weights"])
    assert result.details["guard_steps"] == extra.get("guard_steps", 0)  # > 0: the guard pool was not empty
