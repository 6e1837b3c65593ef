"""`text_retrain`: exact unlearning for a text classifier — refit its head on the retain set.

The text classifiers of this project (`rt-sentiment`) are a frozen pretrained encoder (MiniLM-L6)
plus a linear head, and only the head ever sees the training data: the build embeds the training
snippets once and fits the head on them (`unlearn_ops.models.text.fit_head`). Retraining from
scratch is therefore that same computation without the forget set: the encoder is kept (it was
never trained on our data), the head is reset with the seed and fitted again. `retrain` would be
wrong here: it re-initialises every layer, the pretrained encoder included.

The end of every text policy chain, as `retrain` is for image classifiers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import (
    ALL_KINDS,
    UnlearnResult,
    build_values,
    check_positive,
    fresh_copy,
    require_model,
    require_retain,
)
from unlearn_ops.models.text import TextClassifier, fit_head
from unlearn_ops.training import TrainConfig

EXACT = True  # the result never saw the forget set (what that changes in verification: verify.gates)
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    # The pipeline takes all four from the model's build section (`schedule_from_build`: the
    # build's head schedule, for a fair reference); these defaults equal params.yaml `text`'s.
    epochs: float = 20        # passes of the head over the retained snippets' embeddings
    lr: float = 1e-3          # Adam learning rate of the head
    batch_size: int = 128     # embeddings per step
    seed: int = 0             # head init and data order

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size")


def schedule_from_build(build: Mapping[str, Any]) -> dict[str, Any]:
    """The text build's head schedule (params.yaml `text`) as Config fields."""
    return build_values("text_retrain", build, {k: k for k in ("epochs", "lr", "batch_size", "seed")})


def unlearn(model: TextClassifier, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, TextClassifier, "text_retrain refits the head of a TextClassifier")
    require_retain(splits.retain, "text_retrain")
    new = fresh_copy(model)
    logs: list[str] = []
    fit_head(new, splits.retain, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                             seed=cfg.seed, device=device), progress=logs.append)
    return UnlearnResult(new, "text_retrain", details={"retain_size": len(splits.retain)}, log=logs)
