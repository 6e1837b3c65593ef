"""Generalization-gap membership test: is the forget set still fit better than unseen data?

A model that memorized its training data classifies those samples better than data it never
saw (Yeom et al., CSF'18: the "gap attack", whose advantage is exactly train − test accuracy;
SalUn's SVC MIA has it as the *correctness* feature). After real unlearning the forget samples
are unseen data, so their accuracy matches that of non-members of the same classes. Two numbers:

* `forget_accuracy_gap` = Acc(forget) − Acc(same-class non-members), in 0..1 (0 = retrain-like);
* `forget_accuracy_z` = that gap divided by its standard error under "no difference" (pooled
  two-proportion z statistic). The z form makes one gate threshold fit any forget-set size:
  for 100 samples a 0.05 gap is noise, for 5 000 it is a clear memorization signal.

Both need no retrained model, so production gates can use them. On a model that barely
memorizes (train ≈ test accuracy) they are ≈ 0 for every method, as they should be: there is
then little to forget at the population level.
"""

from __future__ import annotations

import math

from torch import nn

from unlearn_ops.data.splits import Part
from unlearn_ops.training import accuracy


def two_proportion_z(p1: float, n1: int, p2: float, n2: int) -> float:
    """Pooled z statistic of p1 − p2 (0 when both are 0 or 1 and equal, ±inf when the pooled
    variance is 0 but the proportions differ)."""
    if n1 == 0 or n2 == 0 or math.isnan(p1) or math.isnan(p2):
        return float("nan")
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0 if p1 == p2 else math.copysign(math.inf, p1 - p2)
    return (p1 - p2) / se


def accuracy_gap(model: nn.Module, forget: Part, nonmember: Part) -> dict[str, float]:
    """`forget_accuracy_gap` and `forget_accuracy_z` of forget vs non-member samples.

    Pass non-members of the forget set's classes (`mia.matched_nonmembers`), so class mix does
    not masquerade as memorization."""
    acc_f, acc_n = accuracy(model, forget), accuracy(model, nonmember)
    return {"forget_accuracy_gap": acc_f - acc_n,
            "forget_accuracy_z": two_proportion_z(acc_f, len(forget), acc_n, len(nonmember))}
