"""`retrain`: exact unlearning — train the same architecture from scratch on the retain set.

The gold standard every other method is compared with, and the end of every fallback chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.training import OPTIMIZERS, TrainConfig, fit, reinitialize

# Exact unlearning: the result never saw the forget set, so no statistical evidence is needed
# to accept it (gates of `unlearn_ops.verify.gates.POWER_GATES` do not apply).
EXACT = True
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    epochs: float = 3          # same schedule as the base model's training, for a fair reference
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size")
        check_choices(self, {"optimizer": OPTIMIZERS})


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    new = reinitialize(fresh_copy(model), cfg.seed)
    logs: list[str] = []
    fit(new, splits.retain, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                        optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
                                        seed=cfg.seed, device=device), progress=logs.append)
    return UnlearnResult(new, "retrain", details={"retain_size": len(splits.retain)}, log=logs)
