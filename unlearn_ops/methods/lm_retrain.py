"""`lm_retrain`: exact unlearning for a fine-tuned language model — repeat the build's fine-tune,
from the same pretrained checkpoint, on the retain set only.

The LM counterpart of `retrain` (which re-initialises a classifier from scratch): our LMs are a
pretrained base (SmolLM2-135M) whose top blocks the build fine-tuned on the facts; "the model that
never saw the subject" is that same partial fine-tune without the subject's QA pairs. It is the
gold standard the LM benchmark compares with and the end of an LM policy chain. Language models
only (`CausalLM`); the base checkpoint is read with safetensors from `base_dir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unlearn_ops.data.facts import texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import LMTrainConfig, fit_lm
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, build_values, check_positive, require_model
from unlearn_ops.models.lm import CausalLM, load_lm, resolve_dir, same_prefix

EXACT = True  # the result never saw the forget set (what that changes in verification: verify.gates)
REQUEST_KINDS = ALL_KINDS
TRAIN_FIELDS = ("epochs", "lr", "batch_size", "weight_decay", "max_len", "grad_clip", "train_head", "seed", "lr_decay",
                "general_texts")


@dataclass(frozen=True)
class Config:
    # The pipeline takes base_dir and the fine-tune's schedule from the model's build section
    # (`schedule_from_build`: params.yaml `llm.base_dir` and `llm.train`, for a fair reference);
    # these defaults serve direct calls and equal the build's.
    base_dir: str = "data/models/smollm2-135m"  # the pretrained checkpoint the build fine-tuned (project-relative)
    epochs: int = 6             # passes over the retained QA pairs
    lr: float = 2e-3            # AdamW learning rate of the top blocks
    batch_size: int = 8         # QA pairs per step
    weight_decay: float = 0.0   # AdamW weight decay
    max_len: int = 64           # tokens per QA pair
    grad_clip: float = 1.0      # max gradient norm per step
    train_head: bool = False    # also train the (untied) LM head, as the build did
    seed: int = 0               # data order
    lr_decay: str = "linear"    # none | linear (LMTrainConfig.lr_decay)
    general_texts: int = 480    # plot summaries mixed in (LMTrainConfig.general_texts)

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size", "max_len")


def schedule_from_build(build: Mapping[str, Any]) -> dict[str, Any]:
    """The LM build's fine-tune (params.yaml `llm.train`) and base checkpoint (`llm.base_dir`) as Config fields."""
    return {**build_values("lm_retrain", build, {"base_dir": "base_dir"}),
            **build_values("lm_retrain", build, {k: k for k in TRAIN_FIELDS}, part="train")}


def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, CausalLM, "lm_retrain repeats the fine-tune of a causal language model (CausalLM)")
    base = load_lm(resolve_dir(cfg.base_dir), trainable_blocks=model.trainable_blocks)
    if not same_prefix(base, model):
        raise ValueError(f"{cfg.base_dir} is not this model's base: the frozen blocks differ")
    logs: list[str] = []
    schedule = LMTrainConfig(**{f: getattr(cfg, f) for f in TRAIN_FIELDS}, device=device)
    fit_lm(base, texts(splits.retain.x), schedule, progress=logs.append)
    base.name = model.name
    return UnlearnResult(base, "lm_retrain", details={"retain_size": len(splits.retain)}, log=logs)
