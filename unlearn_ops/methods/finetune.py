"""`finetune`: continue training on the retain set only, so the forget set fades (catastrophic
forgetting). Cheap and safe for utility, weak on privacy; the default for small item deletions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.training import OPTIMIZERS, TrainConfig, fit

EXACT = False  # the result has seen the forget set: gates need statistical evidence
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    epochs: float = 1          # a fraction of the base schedule
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size")
        check_choices(self, {"optimizer": OPTIMIZERS})


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    new = fresh_copy(model)
    logs: list[str] = []
    fit(new, splits.retain, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                        optimizer=cfg.optimizer, seed=cfg.seed, device=device),
        progress=logs.append)
    return UnlearnResult(new, "finetune", log=logs)
