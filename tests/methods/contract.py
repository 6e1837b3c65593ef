"""The contract every unlearning method honours; each method's test module calls these."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearn_ops.methods import get_method, run_method
from unlearn_ops.models import state_fingerprint
from unlearn_ops.requests import KINDS


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs"


def check_declarations(name: str) -> None:
    """The module declares what the flow and the benchmarks read without a default: `EXACT` (a
    bool) and `REQUEST_KINDS` (a non-empty tuple of request kinds), beside `Config` and `unlearn`."""
    module = get_method(name)
    assert isinstance(module.EXACT, bool), f"{name}.EXACT must be a bool"
    kinds = module.REQUEST_KINDS
    assert isinstance(kinds, tuple) and kinds, f"{name}.REQUEST_KINDS must be a non-empty tuple"
    assert set(kinds) <= set(KINDS), f"{name}.REQUEST_KINDS {kinds} holds kinds no request has ({KINDS})"
    assert callable(module.unlearn) and dataclasses.is_dataclass(module.Config)


def check_contract(name: str, model: torch.nn.Module, splits, params: dict | None = None) -> None:
    """Declares the contract's attributes, returns a new model, leaves the input untouched, is
    deterministic for a seed, and rejects unknown config keys."""
    check_declarations(name)
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
