"""`logit_suppression`: zero the forgotten classes' output weights and bias. Suppresses the logit only.

What it is, plainly: an instant edit of the last layer (`model.head`) for **whole-class deletion**
that stops the model from *predicting* the forgotten classes. It does **not** remove what the
network learned about them: every layer below the head is unchanged, so the penultimate
features still separate the forgotten class (the `feature_probe` shows it) and a few fine-tuning
steps on a handful of its samples bring the class back (the `relearn` attack shows it). It
passes every output-level metric (forget accuracy ≈ 0, retained accuracy even rises because the
class no longer steals predictions), which is exactly why the verification suite must look
below the output.

Why it exists: a legitimate *fast* option (milliseconds, no data access beyond labels) for
users who need a class hidden from predictions at once (e.g. while a real unlearning job or a
retrain runs) and accept that it is not unlearning in the privacy sense. Reports must call it
"logit suppression", never "forgetting".

Item (random-sample) deletion is refused: there is no output row to zero for a sample whose
class stays in the model. No paper: it is the canary the issue describes (zeroing the class's
output weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import NotApplicable, UnlearnResult, fresh_copy

EXACT = False
# Request kinds this method can serve (benchmarks and policies skip it for the others).
REQUEST_KINDS: tuple[str, ...] = ("class",)


@dataclass(frozen=True)
class Config:
    bias: float = 0.0          # value written into the forgotten classes' output biases; 0 = the
    # plain "zero the weights and bias" edit (the class logit becomes the constant 0)
    seed: int = 0              # unused (the edit is deterministic); kept for a uniform interface

    def __post_init__(self) -> None:
        if not math.isfinite(self.bias):
            raise ValueError(f"logit_suppression: bias must be a finite number, not {self.bias!r}")


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    if len(splits.forget) == 0:
        raise NotApplicable("logit_suppression: the forget set is empty, there is no class to suppress")
    if not splits.is_class_deletion:
        partial = sorted(set(splits.forget_classes) - set(splits.removed_classes))
        raise NotApplicable("logit_suppression handles whole-class deletion only: the retain set still holds "
                            f"classes {partial} of the forget set (use another method for item deletion)")
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise NotApplicable(f"logit_suppression needs a model whose last layer is `head: nn.Linear`, "
                            f"not {type(model).__name__}")
    classes = splits.removed_classes
    new = fresh_copy(model)
    with torch.no_grad():
        idx = torch.as_tensor(classes, dtype=torch.long, device=new.head.weight.device)
        new.head.weight[idx] = 0.0
        if new.head.bias is not None:
            new.head.bias[idx] = cfg.bias
    return UnlearnResult(new.eval(), "logit_suppression", details={"suppressed_classes": classes},
                         log=[f"zeroed output weights of classes {classes} (bias set to {cfg.bias}); "
                              "features below the head are unchanged: this suppresses the logit only"])
