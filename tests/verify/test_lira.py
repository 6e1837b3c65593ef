"""LiRA / U-LiRA: synthetic known answers, then K = 4 tiny shadow models end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TINY_SPEC
from unlearn_ops.data.splits import Part
from unlearn_ops.training import TrainConfig
from unlearn_ops.verify.lira import lira, logit_scaled_confidence, summarize, tpr_at_fpr, u_lira
from unlearn_ops.verify.shadows import plan_shadows, plan_targets, train_shadows

# A recipe that memorizes its 100 training samples (train accuracy 1.0, held-out ≈ 0.8).
MEMORIZE = TrainConfig(epochs=60, lr=3e-3, batch_size=32)


def test_logit_scaled_confidence_is_stable_and_exact():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1000.0, 0.0, -1000.0]])
    labels = torch.tensor([0, 2, 0])
    phi = logit_scaled_confidence(logits, labels)
    p = torch.softmax(logits[:2].double(), 1)
    naive = torch.log(p[[0, 1], [0, 2]] / (1 - p[[0, 1], [0, 2]])).numpy()
    assert np.allclose(phi[:2], naive)
    assert phi[1] == pytest.approx(np.log(1 / 2))                 # p = 1/3: odds 1:2
    assert phi[2] == pytest.approx(1000.0)                       # p rounds to 1.0, φ stays finite


def synthetic(shift: float, k: int = 8, t: int = 4, n: int = 2000, seed: int = 0):
    """φ = per-example difficulty + `shift` if IN + noise, on the plans the attack uses."""
    rng = np.random.default_rng(seed)
    shadows = plan_shadows(n, k, seed)
    targets = plan_targets(shadows, t, seed)
    difficulty = rng.normal(0, 3, n)  # large per-example spread: what makes per-example attacks strong
    draw = lambda member: difficulty + shift * member + rng.normal(0, 0.5, member.shape)  # noqa: E731
    return draw(shadows.member), shadows.member, draw(targets.member), targets.member


@pytest.mark.parametrize("online", [True, False])
def test_lira_known_answers(online):
    s_conf, s_in, t_conf, t_in = synthetic(0.0)
    same = lira(t_conf, t_in, s_conf, s_in, online=online)
    assert abs(same.auc - 0.5) < 0.03
    assert same.tpr_at_1pct_fpr < 0.03
    s_conf, s_in, t_conf, t_in = synthetic(3.0)
    apart = lira(t_conf, t_in, s_conf, s_in, online=online)
    assert apart.auc > 0.99 and apart.tpr_at_1pct_fpr > 0.9
    assert set(apart.as_metrics("lira")) == {"lira_auc", "lira_tpr_at_1pct_fpr", "lira_tpr_at_01pct_fpr",
                                             "lira_accuracy"}


def test_per_example_beats_a_global_threshold():
    """The point of LiRA: per-example calibration finds a shift that a population attack on raw
    φ cannot (the per-example spread is 6× the shift)."""
    s_conf, s_in, t_conf, t_in = synthetic(1.0)
    assert lira(t_conf, t_in, s_conf, s_in).auc > 0.85
    assert summarize(t_conf, t_in).auc < 0.65


def test_u_lira_known_answers_and_ignores_nan():
    s_conf, s_in, t_conf, t_in = synthetic(0.0)
    assert abs(u_lira(t_conf, t_in, s_conf, s_in).accuracy - 0.5) < 0.03
    s_conf, s_in, t_conf, t_in = synthetic(3.0)
    s_conf[:, :100] = np.nan          # 'neither side' entries are dropped, never counted
    res = u_lira(t_conf, t_in, s_conf, s_in)
    assert res.accuracy > 0.95 and res.auc > 0.99
    assert len(res.scores) == t_conf.size - 100 * t_conf.shape[0]


def test_tpr_at_fpr():
    labels, scores = np.r_[np.ones(10), np.zeros(990)], np.r_[np.full(10, 5.0), np.linspace(0, 1, 990)]
    assert tpr_at_fpr(labels, scores, 0.001) == 1.0
    assert tpr_at_fpr(labels, -scores, 0.01) == 0.0


def test_plans_are_balanced_and_independent():
    plan = plan_shadows(500, 4, seed=1)
    assert (plan.member.sum(0) == 2).all() and not plan.forget.any() and plan.targets.all()
    ul = plan_shadows(500, 4, seed=1, targets=50)
    assert ul.targets.sum() == 50
    assert ul.member[:, ~ul.targets].all()                                  # non-targets always trained on
    assert (ul.forget == (ul.member & ul.targets)).all() and (ul.forget.sum(0)[ul.targets] == 2).all()
    held = plan_targets(plan, 3, seed=1)
    assert held.member.shape == (3, 500) and 0.4 < held.member.mean() < 0.6


def mislabeled(pool: Part, mask: np.ndarray) -> Part:
    """Shift the labels of `mask`: mislabeled samples are memorized, the easiest known answer."""
    y = pool.y.clone()
    m = torch.from_numpy(mask)
    y[m] = (y[m] + 1) % 10
    return Part(pool.ids, pool.x, y)


@pytest.fixture(scope="module")
def pool(digits_store) -> Part:
    return digits_store.part(digits_store.active_ids()).sample(200, seed=0)


def test_lira_with_four_tiny_shadow_models(pool):
    mis = np.zeros(len(pool), dtype=bool)
    mis[np.random.default_rng(0).permutation(len(pool))[:50]] = True
    shadows = train_shadows(TINY_SPEC, mislabeled(pool, mis), MEMORIZE, k=4, t=2)
    assert shadows.shadow_conf.shape == (4, 200) and shadows.target_conf.shape == (2, 200)
    overall = shadows.attack()
    assert overall.auc > 0.65                                       # the recipe leaks membership
    on_mislabeled = lira(shadows.target_conf[:, mis], shadows.targets.member[:, mis],
                         shadows.shadow_conf[:, mis], shadows.shadows.member[:, mis])
    assert on_mislabeled.auc > 0.85 and on_mislabeled.auc > overall.auc  # memorized samples leak most


def test_u_lira_with_four_tiny_shadow_models(pool):
    """A no-op 'unlearner' is told apart from retraining on memorized targets; exact retraining
    (deterministic for its seed) is indistinguishable: accuracy 0.5."""
    small = pool.subset(np.arange(100))
    targets = plan_shadows(len(small), 4, seed=0, targets=20).targets  # the plan train_shadows will draw
    data = mislabeled(small, targets)
    noop = train_shadows(TINY_SPEC, data, MEMORIZE, k=4, t=2, method="noop", params={}, targets=20)
    assert (noop.shadows.targets == targets).all()
    assert noop.attack().auc > 0.75
    exact = train_shadows(TINY_SPEC, data, MEMORIZE, k=4, t=2, method="retrain",
                          params={"epochs": 10, "lr": 3e-3, "batch_size": 32}, targets=20)
    assert exact.attack().accuracy == pytest.approx(0.5)
