"""The contract every unlearning method honours; each method's test module calls these."""

from __future__ import annotations

import pytest
import torch

from unlearn_ops.methods import get_method, run_method
from unlearn_ops.models import state_fingerprint


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs"


def check_contract(name: str, model: torch.nn.Module, splits, params: dict | None = None) -> None:
    """Returns a new model, leaves the input untouched, is deterministic for a seed,
    and rejects unknown config keys."""
    before = state_fingerprint(model)
    first = run_method(name, model, splits, params, device="cpu")
    assert first.model is not model, "method must return a new model object"
    assert_same_state(before, state_fingerprint(model))
    second = run_method(name, model, splits, params, device="cpu")
    a, b = state_fingerprint(first.model), state_fingerprint(second.model)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), f"{name} is not deterministic: {k}"
    with pytest.raises(ValueError, match="unknown"):
        run_method(name, model, splits, {**(params or {}), "no_such_setting": 1}, device="cpu")
    assert hasattr(get_method(name), "Config")
