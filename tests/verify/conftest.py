"""Fixtures of the verification tests: the exact reference (retrained without class 3)."""

from __future__ import annotations

import pytest

from unlearn_ops.methods import run_method

RETRAIN_FAST = {"epochs": 15, "lr": 3e-3, "batch_size": 64}


@pytest.fixture(scope="session")
def class_retrained(tiny_model, class_splits):
    """tiny_model's recipe retrained from scratch without the forgotten class (~1 s)."""
    return run_method("retrain", tiny_model, class_splits, RETRAIN_FAST, device="cpu").model
