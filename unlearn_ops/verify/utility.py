"""Utility metrics. UA/RA/TA in the OPTML naming are forget/retain/test *accuracy* here:
`forget_accuracy` (lower after unlearning, target = retrain's), `retain_accuracy`, `test_accuracy`.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.training import accuracy


def retained_class_part(part: Part, forget_classes: list[int]) -> Part:
    """The samples of `part` whose class is not being forgotten."""
    return part.where(~np.isin(part.y.numpy(), forget_classes))


def utility(model: nn.Module, splits: Splits, forget_classes: list[int] | None = None) -> dict[str, float]:
    """forget / retain / test accuracy; with `forget_classes` also the test accuracy on the
    other classes (`retained_test_accuracy`) and on the forgotten ones (`forget_class_test_accuracy`)."""
    out = {"forget_accuracy": accuracy(model, splits.forget),
           "retain_accuracy": accuracy(model, splits.retain),
           "test_accuracy": accuracy(model, splits.test)}
    if forget_classes:
        out["retained_test_accuracy"] = accuracy(model, retained_class_part(splits.test, forget_classes))
        out["forget_class_test_accuracy"] = accuracy(
            model, splits.test.where(np.isin(splits.test.y.numpy(), forget_classes)))
    return out
