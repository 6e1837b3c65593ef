"""`ssd`: contract, the dampening rule, class and item deletion on small digits CNNs."""

from dataclasses import replace
from statistics import median

import pytest
import torch

from tests.conftest import FORGET_CLASS, TINY_TRAIN
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods.ssd import Config, dampen
from unlearn_ops.models import build_model
from unlearn_ops.training import fit
from unlearn_ops.verify import utility

# SSD needs an over-parameterised network: on the 3 658-weight tiny CNN almost every weight is
# shared between classes, and dampening any of them hurts all classes alike (measured: no α
# forgets class 3 selectively there). The behaviour tests use a wider CNN (87 k weights, seconds).
WIDE_SPEC = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 8, "widths": [32, 64], "hidden": 256}


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def wide_models(digits_store) -> list[torch.nn.Module]:
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(fit(build_model(WIDE_SPEC), digits_store.splits().retain, replace(TINY_TRAIN, seed=seed)))
    return models


@pytest.fixture(scope="module")
def wide_model(wide_models) -> torch.nn.Module:
    return wide_models[0]


def test_contract_class(tiny_model, class_splits):
    check_contract("ssd", tiny_model, class_splits)


def test_contract_item(tiny_model, item_splits):
    check_contract("ssd", tiny_model, item_splits)


def test_paper_defaults_dampen_a_small_share_of_the_weights(wide_models, class_splits):
    # Whether α = 10 then forgets class 3 on this small CNN is hit-or-miss (measured over 9 seeds and
    # 1 or 2 threads: forget accuracy 0 on some seeds, unchanged on others, and a different CPU flips
    # seed 0), so the behaviour tests below use α = 5 and medians over seeds; this one checks the
    # selection stays sparse, the premise of the method.
    for model in wide_models:
        details = run_method("ssd", model, class_splits, device="cpu").details
        assert 0 < details["dampened_weights"] < 0.1 * details["total_weights"], details


def test_a_lower_alpha_forgets_the_class_selectively(wide_models, class_splits):
    rows = []
    for model in wide_models:
        before = utility(model, class_splits, [FORGET_CLASS])
        after = utility(run_method("ssd", model, class_splits, {"alpha": 5.0}, device="cpu").model,
                        class_splits, [FORGET_CLASS])
        rows.append((after["forget_accuracy"], after["forget_class_test_accuracy"],
                     before["retained_test_accuracy"] - after["retained_test_accuracy"]))
    forget, forget_test, retained_drop = (median(column) for column in zip(*rows, strict=True))
    # measured medians over seed triples 0-8, 1 or 2 threads: forget <= 0.10, retained drop <= 0.075
    assert forget <= 0.15 and forget_test <= 0.15, rows
    assert retained_drop <= 0.12, rows


def test_item_deletion_keeps_utility(wide_model, item_splits):
    # On a model that does not memorize, the forget samples look like any other: SSD barely moves.
    before = utility(wide_model, item_splits)
    after = utility(run_method("ssd", wide_model, item_splits, device="cpu").model, item_splits)
    assert after["test_accuracy"] >= before["test_accuracy"] - 0.02, (before, after)


def test_dampening_rule_matches_the_paper():
    """Selected where imp_f > α·imp_D; scaled by min(λ·imp_D / imp_f, 1); others untouched."""
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0]]))
    imp_d = {"weight": torch.tensor([[1.0, 1.0, 1.0]])}
    imp_f = {"weight": torch.tensor([[5.0, 20.0, 100.0]])}
    changed = dampen(model, imp_d, imp_f, Config(alpha=10.0, dampening=1.0))
    assert changed == 2
    assert torch.allclose(model.weight, torch.tensor([[1.0, 1.0 / 20.0, 1.0 / 100.0]]))
