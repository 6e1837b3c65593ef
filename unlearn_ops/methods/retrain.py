"""`retrain`: exact unlearning — train the same architecture from scratch on the retain set.

The gold standard every other method is compared with, and the end of every fallback chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, build_values, check_choices, check_positive, fresh_copy
from unlearn_ops.training import OPTIMIZERS, TrainConfig, fit, reinitialize

EXACT = True  # the result never saw the forget set (what that changes in verification: verify.gates)
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    # The pipeline takes epochs, lr, batch_size and seed from the model's build section
    # (`schedule_from_build`: the base model's own schedule, for a fair reference); these defaults
    # serve direct calls and equal params.yaml `train`'s.
    epochs: float = 3          # passes over the retain set
    lr: float = 1e-3           # learning rate
    batch_size: int = 128      # samples per step
    optimizer: str = "adam"    # adam | sgd (the build trains with Adam)
    weight_decay: float = 0.0  # the build uses none
    seed: int = 0              # weight init and data order

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size")
        check_choices(self, {"optimizer": OPTIMIZERS})


def schedule_from_build(build: Mapping[str, Any]) -> dict[str, Any]:
    """The classifier build's schedule (params.yaml `train`) as Config fields."""
    return build_values("retrain", build, {k: k for k in ("epochs", "lr", "batch_size", "seed")})


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    new = reinitialize(fresh_copy(model), cfg.seed)
    logs: list[str] = []
    fit(new, splits.retain, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                        optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
                                        seed=cfg.seed, device=device), progress=logs.append)
    return UnlearnResult(new, "retrain", details={"retain_size": len(splits.retain)}, log=logs)
