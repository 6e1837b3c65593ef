"""What every method returns, and the helpers their contract relies on.

Every method module in `METHODS` declares `EXACT: bool` (exact unlearning: the result never saw
the forget set) and `REQUEST_KINDS` (the request kinds it can serve, from `unlearn_ops.requests.KINDS`);
its `Config` checks its own values in `__post_init__` (ValueError), and `unlearn` raises
`NotApplicable` for a request or model it does not serve.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

# The request kinds of unlearn_ops.requests.KINDS (not imported: it pulls in the store and pydantic;
# tests/methods/test_registry.py checks that the two agree).
ALL_KINDS: tuple[str, ...] = ("class", "concept", "samples", "subject")
ITEM_KINDS: tuple[str, ...] = ("samples", "subject")  # chosen samples, not whole classes or groups


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


def method_of(config: Any) -> str:
    """The method a Config (class or instance) belongs to: its module's name."""
    return (config if isinstance(config, type) else type(config)).__module__.rsplit(".", 1)[-1]


def make_config(config_cls: type, params: dict[str, Any] | None) -> Any:
    """`Config(**params)` with a clear error for unknown keys (typos must not be ignored)."""
    params = dict(params or {})
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {method_of(config_cls)} setting(s) {unknown}; known: {sorted(known)}")
    return config_cls(**params)


def check_choices(cfg: Any, choices: Mapping[str, Sequence[Any]]) -> None:
    """ValueError naming the method and the setting unless each `cfg.<name>` is one of its choices."""
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ValueError(f"{method_of(cfg)}: {name} must be one of {tuple(allowed)}, not {value!r}")


def check_positive(cfg: Any, *names: str) -> None:
    """ValueError naming the method and the setting unless each `cfg.<name>` is > 0."""
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ValueError(f"{method_of(cfg)}: {name} must be > 0, not {value!r}")


def build_values(method: str, build: Mapping[str, Any], names: Mapping[str, str], part: str = "") -> dict[str, Any]:
    """{Config field: build value} for `names` = {Config field: key in the build section (or in its
    sub-section `part`)}. An exact method repeats the build's schedule, so a missing key is an error
    (a Config default in its place would silently differ from what the build did)."""
    section = (build.get(part) or {}) if part else build
    missing = sorted(key for key in names.values() if key not in section)
    if missing:
        where = f"`{part}` of the model's build section" if part else "the model's build section"
        raise ValueError(f"{method}: {where} lacks {missing}, which its schedule repeats")
    return {field: section[key] for field, key in names.items()}


def require_model(model: Any, cls: type, needs: str) -> None:
    """NotApplicable unless `model` is a `cls`; `needs` says what the method works on, e.g.
    "gan_retrain retrains a GAN container"."""
    if not isinstance(model, cls):
        raise NotApplicable(f"{needs}, not {type(model).__name__}")


def require_retain(retain: Sized, method: str) -> None:
    """NotApplicable when a method that trains on the retain set has none to train on."""
    if len(retain) == 0:
        raise NotApplicable(f"{method}: the retain set is empty, there is nothing to train on")
