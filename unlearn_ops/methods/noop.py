"""`noop`: returns an unchanged copy. For tests and canaries only — it must fail every gate."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, fresh_copy

EXACT = False
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    seed: int = 0


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    return UnlearnResult(fresh_copy(model), "noop")
