"""`lm_retrain`: exact unlearning for a fine-tuned language model — repeat the build's fine-tune,
from the same pretrained checkpoint, on the retain set only.

The LM counterpart of `retrain` (which re-initialises a classifier from scratch): our LMs are a
pretrained base (SmolLM2-135M) whose top blocks the build fine-tuned on the facts; "the model that
never saw the subject" is that same partial fine-tune without the subject's QA pairs. It is the
gold standard the LM benchmark compares with and the end of an LM policy chain. Language models
only (`CausalLM`); the base checkpoint is read with safetensors from `base_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_ops.data.facts import texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import LMTrainConfig, fit_lm
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, check_positive, require_model
from unlearn_ops.models.lm import CausalLM, load_lm, resolve_dir, same_prefix

# Exact unlearning: the result never saw the forget set, so no statistical evidence is needed
# to accept it (gates of `unlearn_ops.verify.gates.POWER_GATES` do not apply).
EXACT = True
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    base_dir: str = "data/models/smollm2-135m"  # the pretrained checkpoint the build fine-tuned (project-relative)
    epochs: int = 12            # same schedule as the build (params.yaml llm.train), for a fair reference
    lr: float = 1e-3            # AdamW learning rate of the top blocks
    batch_size: int = 8         # QA pairs per step
    weight_decay: float = 0.0   # AdamW weight decay
    max_len: int = 64           # tokens per QA pair
    grad_clip: float = 1.0      # max gradient norm per step
    train_head: bool = False    # also train the (untied) LM head, as the build did
    seed: int = 0               # data order

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size", "max_len")


def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, CausalLM, "lm_retrain repeats the fine-tune of a causal language model (CausalLM)")
    base = load_lm(resolve_dir(cfg.base_dir), trainable_blocks=model.trainable_blocks)
    if not same_prefix(base, model):
        raise ValueError(f"{cfg.base_dir} is not this model's base: the frozen blocks differ")
    logs: list[str] = []
    fit_lm(base, texts(splits.retain.x),
           LMTrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                         max_len=cfg.max_len, grad_clip=cfg.grad_clip, train_head=cfg.train_head, seed=cfg.seed,
                         device=device), progress=logs.append)
    base.name = model.name
    return UnlearnResult(base, "lm_retrain", details={"retain_size": len(splits.retain)}, log=logs)
