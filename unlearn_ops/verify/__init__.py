"""Verification: utility, membership-inference attacks, gates."""

from __future__ import annotations

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.verify.gap import accuracy_gap
from unlearn_ops.verify.gates import GateResult, Verdict, check
from unlearn_ops.verify.mia import forgetting_rate, matched_nonmembers, mia_efficacy, simple_mia
from unlearn_ops.verify.utility import utility


def production_metrics(model: nn.Module, splits: Splits, *, forget_classes: list[int] | None = None,
                       reference_test_accuracy: float | None = None,
                       reference_retained_test_accuracy: float | None = None, seed: int = 0) -> dict[str, float]:
    """The metrics production gates read; needs no retrained model.

    MIA compares the forget set with non-members *of the same classes* (for a class deletion,
    forget-class train samples vs forget-class non-members). Utility is compared with the
    previous champion's numbers (`reference_*`), passed in by the caller.
    """
    metrics = utility(model, splits, forget_classes)
    # The population tests below have little power on a few samples (a gate reads this to refuse
    # judging a forget set too small to tell a no-op from a retrain; see docs/verification.md).
    metrics["forget_set_size"] = float(len(splits.forget))
    nonmember = matched_nonmembers(splits.forget, splits.nonmember)
    metrics.update(simple_mia(model, splits.forget, nonmember, seed=seed))
    metrics.update(accuracy_gap(model, splits.forget, nonmember))  # generalization-gap test (verify/gap.py)
    if reference_test_accuracy is not None:
        metrics["test_accuracy_drop"] = reference_test_accuracy - metrics["test_accuracy"]
    if reference_retained_test_accuracy is not None and "retained_test_accuracy" in metrics:
        metrics["retained_test_accuracy_drop"] = reference_retained_test_accuracy - metrics["retained_test_accuracy"]
    return metrics


__all__ = ["GateResult", "Verdict", "check", "forgetting_rate", "mia_efficacy", "production_metrics", "simple_mia",
           "utility"]
