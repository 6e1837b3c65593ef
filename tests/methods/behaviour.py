"""Behaviour checks shared by the baseline methods' tests (tiny digits CNN from tests/conftest.py)."""

from __future__ import annotations

import torch

from tests.conftest import FORGET_CLASS
from unlearn_ops.methods import run_method
from unlearn_ops.training import per_sample_loss
from unlearn_ops.verify import utility


def check_class_deletion(name: str, model: torch.nn.Module, splits, params: dict | None = None, *,
                         max_forget_accuracy: float = 0.05, tolerance: float = 0.05) -> dict[str, float]:
    """Forget accuracy (train and test samples of the class) collapses; the other classes' test
    accuracy stays within `tolerance` of the original's."""
    before = utility(model, splits, [FORGET_CLASS])
    result = run_method(name, model, splits, params, device="cpu")
    after = utility(result.model, splits, [FORGET_CLASS])
    assert before["forget_accuracy"] > 0.9, "the original must know the class, or the test proves nothing"
    assert after["forget_accuracy"] <= max_forget_accuracy, after
    assert after["forget_class_test_accuracy"] <= max_forget_accuracy, after
    assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - tolerance, (before, after)
    assert result.seconds > 0 and result.method == name
    return after


def check_item_deletion(name: str, model: torch.nn.Module, splits, params: dict | None = None, *,
                        tolerance: float = 0.05, loss_must_rise: bool = True) -> dict[str, float]:
    """Random-sample deletion runs, keeps test accuracy within `tolerance`, and (for methods that
    train against the forget set) raises the forget set's mean loss."""
    before = utility(model, splits)
    result = run_method(name, model, splits, params, device="cpu")
    after = utility(result.model, splits)
    assert after["test_accuracy"] >= before["test_accuracy"] - tolerance, (before, after)
    if loss_must_rise:
        lb = per_sample_loss(model, splits.forget).mean().item()
        la = per_sample_loss(result.model, splits.forget).mean().item()
        assert la > lb, f"forget-set loss did not rise: {lb:.4f} -> {la:.4f}"
    return after
