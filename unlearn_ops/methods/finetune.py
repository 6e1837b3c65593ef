"""`finetune`: continue training on the retain set only, so the forget set fades (catastrophic
forgetting). Cheap and safe for utility, weak on privacy; the default for small item deletions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import UnlearnResult, fresh_copy
from unlearn_ops.training import TrainConfig, fit


@dataclass(frozen=True)
class Config:
    epochs: float = 1          # a fraction of the base schedule
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    seed: int = 0


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    new = fresh_copy(model)
    logs: list[str] = []
    fit(new, splits.retain, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                        optimizer=cfg.optimizer, seed=cfg.seed, device=device),
        progress=logs.append)
    return UnlearnResult(new, "finetune", log=logs)
