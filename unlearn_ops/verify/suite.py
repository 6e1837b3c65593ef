"""The verification suite: every metric of one model on one `Splits`, and the Avg. Gap to retrain.

`evaluate` is what benchmarks and audits call (side by side with the retrained model, which is
evaluated by the same function); production gates read a subset of the same keys
(`unlearn_ops.verify.production_metrics`). Definitions: docs/verification.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.verify.mia import forgetting_rate, matched_nonmembers, mia_efficacy, simple_mia
from unlearn_ops.verify.probe import feature_probe
from unlearn_ops.verify.relearn import relearn
from unlearn_ops.verify.utility import utility

# SalUn's Avg. Gap is taken over UA, RA, TA and MIA-Efficacy. UA = 1 − forget accuracy, so
# |UA − UA_r| = |forget_accuracy − forget_accuracy_r|: the gap can use accuracies directly.
GAP_KEYS: tuple[str, ...] = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")
RELEARN_SAMPLES = 64  # forget and retain samples each, for the relearning attack


def class_heldout(splits: Splits, forget_classes: Sequence[int]) -> Part:
    """Never-trained samples of the forgotten classes (test ∪ non-member pool)."""
    pool = splits.test.concat(splits.nonmember)
    return pool.where(np.isin(pool.y.numpy(), list(forget_classes)))


def relearn_metrics(model: nn.Module, splits: Splits, forget_classes: Sequence[int] | None,
                    steps: tuple[int, ...], seed: int = 0) -> dict[str, float]:
    """Relearning attack with 64 forget + 64 retain samples.

    Class deletion: accuracy is measured on never-trained samples of the forgotten classes (does
    the *class* come back?). Item deletion: on the forget samples not used for relearning (do the
    *samples* come back?); for a class deletion those would be trained-on copies of the class.
    An item deletion relearns on at most half of the forget set, so a held-out half always exists.
    """
    n_forget = RELEARN_SAMPLES if forget_classes else min(RELEARN_SAMPLES, len(splits.forget) // 2)
    forget_sample = splits.forget.sample(n_forget, seed)
    retain_sample = splits.retain.sample(RELEARN_SAMPLES, seed + 1)
    if forget_classes:
        eval_part = class_heldout(splits, forget_classes)
    else:
        used = set(forget_sample.ids)
        eval_part = splits.forget.where(np.array([i not in used for i in splits.forget.ids], dtype=bool))
    if len(eval_part) == 0 or len(forget_sample) == 0:
        return {f"relearn_acc_{s}": float("nan") for s in (0, *steps)}
    return relearn(model, forget_sample, retain_sample, eval_part, steps=tuple(steps), seed=seed)


def evaluate(model: nn.Module, splits: Splits, *, original: nn.Module | None = None,
             forget_classes: list[int] | None = None, relearn_steps: tuple[int, ...] | None = None,
             probe: bool = False, seed: int = 0) -> dict[str, float]:
    """All metrics of `model` (accuracies and attack outputs are fractions in 0..1).

    - utility: forget / retain / test accuracy (+ retained / forget-class test accuracy for a
      class deletion);
    - `mia_efficacy` (confidence SVC, SalUn/Sparse);
    - `mia_simple`, `mia_loss_auc` (loss MIA, forget vs non-members of the same classes);
    - `forgetting_rate` (SVM transfer from `original`), when `original` is given;
    - `feature_probe` (linear probe on penultimate features, on the test set), when `probe`
      and `forget_classes`;
    - `relearn_acc_<k>` after k relearning steps, when `relearn_steps`.
    """
    metrics = utility(model, splits, forget_classes)
    metrics["mia_efficacy"] = mia_efficacy(model, splits, seed=seed)
    # Non-members of the forget set's classes: for a class deletion these are exactly the
    # forget-class non-members the seed papers' Fr and the loss MIA need.
    nonmember = matched_nonmembers(splits.forget, splits.nonmember)
    metrics.update(simple_mia(model, splits.forget, nonmember, seed=seed))
    if original is not None:
        metrics["forgetting_rate"] = forgetting_rate(original, model, splits.forget, nonmember, seed=seed)
    if probe and forget_classes:
        metrics["feature_probe"] = feature_probe(model, splits.test, list(forget_classes), seed=seed)
    if relearn_steps:
        metrics.update(relearn_metrics(model, splits, forget_classes, tuple(relearn_steps), seed=seed))
    return metrics


def avg_gap(metrics: Mapping[str, float], reference: Mapping[str, float],
            keys: Sequence[str] = GAP_KEYS) -> float:
    """SalUn's Avg. Gap: mean over `keys` of |metric − reference metric|, in **percentage
    points** (metrics are fractions, the gap is ×100, as in the SalUn tables): 0 = identical to
    the retrained model. A key missing on either side is an error (never silently dropped); a
    NaN value makes the gap NaN."""
    missing = [k for k in keys if k not in metrics or k not in reference]
    if missing:
        raise KeyError(f"avg_gap needs {missing} in both the metrics and the reference")
    gaps = [abs(float(metrics[k]) - float(reference[k])) for k in keys]
    return float("nan") if any(math.isnan(g) for g in gaps) else 100.0 * sum(gaps) / len(gaps)
