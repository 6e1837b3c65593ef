"""`npo`: Negative Preference Optimization (Zhang et al. 2024; LM baseline, OpenUnlearning `NPO`).

Forget answers are treated as "losing" responses of DPO with no winner:
L_NPO = −(2/β)·log σ(−β·(log π_θ(y|x) − log π_ref(y|x))), with log π the *summed* answer
log-probability and π_ref the model before unlearning (computed once, frozen). Unlike gradient
ascent the loss saturates once the forget answers are less likely than under the reference, so it
degrades more gracefully. OpenUnlearning's NPO adds a retain NLL term (γ·L_NPO + α·NLL_retain,
β = 0.1, γ = α = 1); so do we. Trains only the model's top blocks. Language models only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from unlearn_ops.data.facts import texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import mean_nll, sequence_logprob, text_set, trainable_copy, unlearning_loop
from unlearn_ops.methods.base import ITEM_KINDS, UnlearnResult, check_positive, require_model
from unlearn_ops.methods.grad_diff import Config as GradDiffConfig
from unlearn_ops.models.lm import CausalLM, scored_logprobs

EXACT = False
REQUEST_KINDS = ITEM_KINDS  # a person's or chosen QA pairs; LMs have no classes


@dataclass(frozen=True)
class Config(GradDiffConfig):
    # grad_diff's schedule and retain term (retain_batch_size 0 = plain NPO; gamma weighs the NPO
    # term), plus NPO's temperature
    beta: float = 0.1           # NPO inverse temperature (OpenUnlearning default)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "beta")


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over the batch of −(2/β)·log σ(−β·(logp − ref_logp))."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, CausalLM, "npo unlearns a causal language model (CausalLM)")
    new = trainable_copy(model, cfg.seed, device)
    forget = text_set(new, texts(splits.forget.x), cfg.max_len)
    retain = text_set(new, texts(splits.retain.x), cfg.max_len)
    ref = scored_logprobs(new, forget.enc, forget.all_states())[0].to(next(new.parameters()).device)  # π_ref = θ before

    def loss(f: list[int], r: list[int] | None):
        value = cfg.gamma * npo_loss(sequence_logprob(new, forget, f), ref[f], cfg.beta)
        return value + cfg.alpha * mean_nll(new, retain, r) if r else value

    logs = unlearning_loop(new, len(forget), loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           grad_clip=cfg.grad_clip, seed=cfg.seed, n_retain=len(retain),
                           retain_batch_size=cfg.retain_batch_size)
    return UnlearnResult(new, "npo", details={"forget_size": len(forget), "retain_size": len(retain)}, log=logs)
