"""Population attacks with known answers (synthetic data), and their direction on the tiny model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.verify.mia import (
    auc,
    forgetting_rate,
    matched_nonmembers,
    mia_efficacy,
    simple_mia,
    simple_mia_scores,
    svc_confidence_attack,
)

RNG = np.random.default_rng(0)


def logits_model(dim: int) -> nn.Module:
    """A model whose logits are its input: synthetic 'logit' data is scored exactly as given."""
    model = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(dim))
    return model.eval()


def part(name: str, x: np.ndarray, label: int = 0) -> Part:
    return Part(tuple(f"{name}/{i}" for i in range(len(x))), torch.tensor(x, dtype=torch.float32),
                torch.full((len(x),), label, dtype=torch.long))


def confident(n: int, margin: float, spread: float = 0.3, dim: int = 4) -> np.ndarray:
    """Logits whose class-0 margin is ~N(margin, spread): large margin = confident = member-like."""
    x = RNG.normal(0, 0.05, (n, dim))
    x[:, 0] += RNG.normal(margin, spread, n)
    return x


def test_loss_attack_is_chance_on_identical_and_perfect_on_separable():
    same_a, same_b = RNG.normal(0, 1, 2000), RNG.normal(0, 1, 2000)
    assert abs(simple_mia_scores(same_a, same_b) - 0.5) < 0.05
    assert abs(auc(same_a, same_b) - 0.5) < 0.05
    high, low = RNG.normal(5, 0.5, 500), RNG.normal(0, 0.5, 500)
    assert simple_mia_scores(high, low) > 0.99
    assert auc(high, low) > 0.99


def test_simple_mia_on_a_model_reads_losses():
    model = logits_model(4)
    members, nonmembers = part("m", confident(400, 6.0)), part("n", confident(400, -1.0))
    out = simple_mia(model, members, nonmembers)
    assert out["mia_simple"] > 0.95 and out["mia_loss_auc"] > 0.99
    out = simple_mia(model, members, part("n2", confident(400, 6.0)))
    assert abs(out["mia_loss_auc"] - 0.5) < 0.08


def test_svc_confidence_attack_known_answers():
    members, nonmembers = RNG.uniform(0.9, 1.0, 300), RNG.uniform(0.0, 0.5, 300)
    assert svc_confidence_attack(members, nonmembers, RNG.uniform(0.9, 1.0, 200)) < 0.02  # look like members
    assert svc_confidence_attack(members, nonmembers, RNG.uniform(0.0, 0.5, 200)) > 0.98  # look like non-members
    mixed = np.r_[RNG.uniform(0.9, 1.0, 100), RNG.uniform(0.0, 0.5, 100)]
    assert abs(svc_confidence_attack(members, nonmembers, mixed) - 0.5) < 0.05


def synthetic_splits(forget_margin: float) -> Splits:
    return Splits(forget=part("f", confident(200, forget_margin)), retain=part("r", confident(600, 6.0)),
                  test=part("t", confident(300, 0.0)), nonmember=part("n", confident(300, 0.0)), num_classes=4)


def test_mia_efficacy_known_answers():
    model = logits_model(4)
    assert mia_efficacy(model, synthetic_splits(6.0)) < 0.05     # forget set looks like retain: not forgotten
    assert mia_efficacy(model, synthetic_splits(0.0)) > 0.95     # forget set looks like test: forgotten


def test_forgetting_rate_known_answers():
    """Attacker fitted on the original; identical member/non-member outputs give a coin flip,
    separable ones give Fr ≈ 0 for the original and ≈ 1 for a model that lost the samples."""
    original = logits_model(4)
    members, nonmembers = part("m", confident(600, 6.0)), part("n", confident(600, -2.0))
    assert forgetting_rate(original, original, members, nonmembers) < 0.02

    class Forgot(nn.Module):  # the members now get non-member outputs
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x - torch.tensor([8.0, 0, 0, 0]) + self.w

    assert forgetting_rate(original, Forgot(), members, nonmembers) > 0.98
    same = part("s", confident(600, 6.0))
    assert 0.3 < forgetting_rate(original, original, members, same) < 0.7


def test_direction_on_the_tiny_model(tiny_model, class_retrained, class_splits):
    """A no-op keeps the class recognisably 'in'; retraining without it makes it look unseen."""
    noop_eff, retrain_eff = mia_efficacy(tiny_model, class_splits), mia_efficacy(class_retrained, class_splits)
    assert retrain_eff > 0.9 and noop_eff < 0.2
    nonmember = matched_nonmembers(class_splits.forget, class_splits.nonmember)
    assert set(nonmember.y.tolist()) == {3}
    noop_fr = forgetting_rate(tiny_model, tiny_model, class_splits.forget, nonmember)
    retrain_fr = forgetting_rate(tiny_model, class_retrained, class_splits.forget, nonmember)
    assert retrain_fr > noop_fr + 0.3


def test_empty_inputs_give_nan_not_a_pass(tiny_model, class_splits):
    empty = class_splits.forget.subset([])
    assert np.isnan(forgetting_rate(tiny_model, tiny_model, empty, class_splits.nonmember))
    no_forget = Splits(forget=empty, retain=class_splits.retain, test=class_splits.test,
                       nonmember=class_splits.nonmember, num_classes=10)
    assert np.isnan(mia_efficacy(tiny_model, no_forget))
