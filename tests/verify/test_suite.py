"""The verification suite: every metric in one call, and SalUn's Avg. Gap."""

from __future__ import annotations

import math

import pytest

from tests.conftest import FORGET_CLASS
from unlearn_ops.verify import check
from unlearn_ops.verify.suite import GAP_KEYS, avg_gap, evaluate

UNIT = {"forget_accuracy", "retain_accuracy", "test_accuracy", "retained_test_accuracy",
        "forget_class_test_accuracy", "mia_efficacy", "mia_simple", "mia_loss_auc", "forgetting_rate",
        "feature_probe"}


def test_avg_gap_is_mean_absolute_gap_in_percentage_points():
    model = {"forget_accuracy": 0.10, "retain_accuracy": 0.90, "test_accuracy": 0.80, "mia_efficacy": 0.20}
    retrain = {"forget_accuracy": 0.05, "retain_accuracy": 0.95, "test_accuracy": 0.80, "mia_efficacy": 0.30}
    assert avg_gap(model, retrain) == pytest.approx(5.0)          # (5 + 5 + 0 + 10) / 4 points
    assert avg_gap(retrain, retrain) == 0.0
    assert avg_gap(model, retrain, keys=("mia_efficacy",)) == pytest.approx(10.0)
    assert GAP_KEYS == ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


def test_avg_gap_reproduces_salun_table_1():
    """SalUn (ICLR'24) Table 1, random 10 % on CIFAR-10: SalUn vs Retrain gives Avg. Gap 1.15."""
    pct = lambda ua, ra, ta, mia: {"forget_accuracy": 1 - ua / 100, "retain_accuracy": ra / 100,  # noqa: E731
                                   "test_accuracy": ta / 100, "mia_efficacy": mia / 100}
    assert avg_gap(pct(2.85, 99.62, 93.93, 14.39), pct(5.24, 100.0, 94.26, 12.88)) == pytest.approx(1.15, abs=0.005)


def test_avg_gap_never_drops_a_metric():
    with pytest.raises(KeyError, match="mia_efficacy"):
        avg_gap({"forget_accuracy": 0, "retain_accuracy": 1, "test_accuracy": 1},
                {"forget_accuracy": 0, "retain_accuracy": 1, "test_accuracy": 1, "mia_efficacy": 0})
    nan = dict.fromkeys(GAP_KEYS, 0.5) | {"mia_efficacy": float("nan")}
    assert math.isnan(avg_gap(nan, dict.fromkeys(GAP_KEYS, 0.5)))


def test_evaluate_class_deletion_all_metrics(tiny_model, class_retrained, class_splits):
    noop = evaluate(tiny_model, class_splits, original=tiny_model, forget_classes=[FORGET_CLASS],
                    relearn_steps=(1, 5), probe=True)
    exact = evaluate(class_retrained, class_splits, original=tiny_model, forget_classes=[FORGET_CLASS],
                     relearn_steps=(1, 5), probe=True)
    for metrics in (noop, exact):
        assert UNIT | {"relearn_acc_0", "relearn_acc_1", "relearn_acc_5"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in UNIT), metrics
    # the retrained model is the target; the no-op is far from it on every forgetting metric
    assert exact["forget_accuracy"] < 0.05 < 0.9 < noop["forget_accuracy"]
    assert exact["mia_efficacy"] > noop["mia_efficacy"] + 0.5
    assert exact["forgetting_rate"] > noop["forgetting_rate"]
    assert exact["feature_probe"] < noop["feature_probe"]
    assert exact["relearn_acc_5"] < noop["relearn_acc_5"]
    assert avg_gap(noop, exact) > 20 > avg_gap(exact, exact)


def test_evaluate_item_deletion_relearns_on_half_of_a_small_forget_set(tiny_model, item_splits):
    metrics = evaluate(tiny_model, item_splits, relearn_steps=(2,))
    assert "forgetting_rate" not in metrics and "feature_probe" not in metrics   # not asked for
    assert "retained_test_accuracy" not in metrics
    assert 0.0 <= metrics["relearn_acc_2"] <= 1.0      # 40 forget samples: 20 relearn, 20 held out
    assert evaluate(tiny_model, item_splits, seed=0) == evaluate(tiny_model, item_splits, seed=0)


def test_power_gates_apply_to_approximate_methods_only():
    from unlearn_ops.methods import is_exact
    from unlearn_ops.verify.gates import for_method

    gates = {"forget_set_size": {"min": 100}, "mia_loss_auc": {"max": 0.6}}
    assert is_exact("retrain") and not is_exact("finetune")
    assert for_method(gates, exact=False) == gates
    assert for_method(gates, exact=True) == {"mia_loss_auc": {"max": 0.6}}
    assert check({"forget_set_size": 30.0, "mia_loss_auc": 0.5}, gates).failed == ["forget_set_size"]
