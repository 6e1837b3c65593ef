"""`ssd` (Selective Synaptic Dampening): shrink the weights that matter far more to the forget set than to the data.

Paper: Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through Selective
Synaptic Dampening" (AAAI'24); code `if-loops/selective-synaptic-dampening`. No training:

1. Importance of each weight = its diagonal (empirical) Fisher, the mean over mini-batches of the
   squared gradient of the batch's mean CE — once on the training data D (retain ∪ forget) and
   once on the forget set D_f.
2. Select the weights with imp_f > α · imp_D (much more important for D_f than for D).
3. Multiply them by β = min(λ · imp_D / imp_f, 1) (the paper's `lower_bound` = 1 caps it).

Differences from the paper's code: importance on D uses a seeded subsample of at most
`max_train_samples` samples (the paper uses all of D; the cost of that one pass is what decides
the speed-up over retraining), and the two importance passes use the same batch size so their
scales agree (for a forget set smaller than one batch they still differ; see the docs page).
Strong on class deletion; on item deletion the forget samples' importances are close to D's, so
SSD dampens little (a known limitation, reported in the benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, check_positive, fresh_copy
from unlearn_ops.utils import resolve_device

EXACT = False
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    alpha: float = 10.0        # α, the code's `selection_weighting`: dampen where imp_f > α·imp_D (paper: 10; ×0.5 for ViT)
    dampening: float = 1.0     # λ, the code's `dampening_constant`: factor min(λ·imp_D/imp_f, 1) (paper: 1)
    exponent: float = 1.0      # factor raised to this power (paper code: 1)
    lower_bound: float = 1.0   # the factor is capped at this value (paper code: 1, i.e. never amplify)
    batch_size: int = 64       # mini-batch of the importance passes (paper code: the loaders' batch size)
    max_train_samples: int = 10000  # cap on D for its importance pass, seeded subsample (paper: all of D; 0 = all)
    seed: int = 0              # which samples of D are used when capped

    def __post_init__(self) -> None:
        check_positive(self, "batch_size")


def importances(model: nn.Module, data: Part, batch_size: int, dev: torch.device) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of the squared gradient of the batch's mean CE, per parameter."""
    imp = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    batches = 0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start:start + batch_size].to(dev), data.y[start:start + batch_size].to(dev)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            if n in imp and p.grad is not None:
                imp[n] += p.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return {n: v / max(batches, 1) for n, v in imp.items()}


@torch.no_grad()
def dampen(model: nn.Module, imp_d: dict[str, torch.Tensor], imp_f: dict[str, torch.Tensor],
           cfg: Config) -> int:
    """Apply SSD's selection and dampening in place; returns how many weights were changed."""
    changed = 0
    for n, p in model.named_parameters():
        if n not in imp_d:
            continue
        selected = imp_f[n] > cfg.alpha * imp_d[n]
        if not selected.any():
            continue
        factor = ((cfg.dampening * imp_d[n][selected]) / imp_f[n][selected]).pow(cfg.exponent)
        factor = torch.clamp(factor, max=cfg.lower_bound)
        p[selected] = p[selected] * factor
        changed += int(selected.sum().item())
    return changed


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev)
    # eval(): importances of the model as it predicts; BatchNorm statistics must not change here
    new.eval()
    train = splits.retain.concat(splits.forget) if len(splits.forget) else splits.retain
    imp_d = importances(new, train.sample(cfg.max_train_samples, cfg.seed), cfg.batch_size, dev)
    imp_f = importances(new, splits.forget, cfg.batch_size, dev)
    changed = dampen(new, imp_d, imp_f, cfg)
    total = sum(v.numel() for v in imp_d.values())
    return UnlearnResult(new.eval(), "ssd", details={"dampened_weights": changed, "total_weights": total},
                         log=[f"dampened {changed} of {total} weights"])
