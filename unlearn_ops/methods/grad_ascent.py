"""`grad_ascent`: gradient ascent on the forget set's answers (LM baseline, OpenUnlearning `GradAscent`).

Loss = −NLL(forget answers): the likelihood of the forgotten answers is pushed down and nothing
holds the rest of the model in place, so utility collapses if it runs long. Kept as the simplest
reference point (research/metrics.md §1.1, §3.8). Like every LM method it trains only the model's
top blocks (the ones the build trained). Language models only (`CausalLM`).
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_ops.data.facts import texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import mean_nll, text_set, trainable_copy, unlearning_loop
from unlearn_ops.methods.base import ITEM_KINDS, UnlearnResult, check_positive, require_model
from unlearn_ops.models.lm import CausalLM

EXACT = False
REQUEST_KINDS = ITEM_KINDS  # a person's or chosen QA pairs; LMs have no classes


@dataclass(frozen=True)
class Config:
    epochs: int = 5             # passes over the forget set (OpenUnlearning's TOFU runs 10, full model, lr 1e-5)
    lr: float = 1e-4            # AdamW learning rate of the top blocks
    batch_size: int = 8         # forget QA pairs per step
    max_len: int = 64           # tokens per QA pair (prompt + answer + EOS)
    grad_clip: float = 1.0      # max gradient norm per step
    seed: int = 0               # data order

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size", "max_len")


def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, CausalLM, "grad_ascent unlearns a causal language model (CausalLM)")
    new = trainable_copy(model, cfg.seed, device)
    forget = text_set(new, texts(splits.forget.x), cfg.max_len)
    logs = unlearning_loop(new, len(forget), lambda f, _r: -mean_nll(new, forget, f), epochs=cfg.epochs,
                           batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip, seed=cfg.seed)
    return UnlearnResult(new, "grad_ascent", details={"forget_size": len(forget)}, log=logs)
