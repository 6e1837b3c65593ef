"""What every method returns, and the helpers their contract relies on."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn


class NotApplicable(Exception):
    """The method does not apply to this request or model (e.g. an item deletion given to a
    whole-class method). The flow moves on to the next method of the chain without alarm; any
    other exception from a method is a bug and is reported as an error."""


@dataclass
class UnlearnResult:
    """The new model and what the method did (timings, selections, logs)."""

    model: nn.Module
    method: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def fresh_copy(model: nn.Module) -> nn.Module:
    """Methods work on a deep copy: the caller's model is never mutated."""
    return copy.deepcopy(model)


def make_config(config_cls: type, params: dict[str, Any] | None) -> Any:
    """`Config(**params)` with a clear error for unknown keys (typos must not be ignored)."""
    params = dict(params or {})
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {config_cls.__module__.rsplit('.', 1)[-1]} setting(s) {unknown}; "
                         f"known: {sorted(known)}")
    return config_cls(**params)
