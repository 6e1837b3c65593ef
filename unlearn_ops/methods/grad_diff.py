"""`grad_diff`: gradient difference (LM baseline, OpenUnlearning `GradDiff`).

Loss = γ·(−NLL(forget answers)) + α·NLL(retain answers): ascend on the forget set while a retain
batch per step keeps the model's other knowledge (OpenUnlearning defaults γ = α = 1, retain loss
NLL). Trains only the model's top blocks. Language models only (`CausalLM`).
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_ops.data.facts import texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import mean_nll, text_set, trainable_copy, unlearning_loop
from unlearn_ops.methods.base import ITEM_KINDS, UnlearnResult, require_model
from unlearn_ops.methods.grad_ascent import Config as GradAscentConfig
from unlearn_ops.models.lm import CausalLM

EXACT = False
REQUEST_KINDS = ITEM_KINDS  # a person's or chosen QA pairs; LMs have no classes


@dataclass(frozen=True)
class Config(GradAscentConfig):
    # grad_ascent's schedule (epochs, lr, batch_size, max_len, grad_clip, seed), plus the retain term
    retain_batch_size: int = 8  # retain QA pairs drawn with every forget batch
    gamma: float = 1.0          # weight of the forget (ascent) term
    alpha: float = 1.0          # weight of the retain NLL term


def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, CausalLM, "grad_diff unlearns a causal language model (CausalLM)")
    new = trainable_copy(model, cfg.seed, device)
    forget = text_set(new, texts(splits.forget.x), cfg.max_len)
    retain = text_set(new, texts(splits.retain.x), cfg.max_len)

    def loss(f: list[int], r: list[int] | None):
        value = -cfg.gamma * mean_nll(new, forget, f)
        return value + cfg.alpha * mean_nll(new, retain, r) if r else value

    logs = unlearning_loop(new, len(forget), loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           grad_clip=cfg.grad_clip, seed=cfg.seed, n_retain=len(retain),
                           retain_batch_size=cfg.retain_batch_size)
    return UnlearnResult(new, "grad_diff", details={"forget_size": len(forget), "retain_size": len(retain)}, log=logs)
