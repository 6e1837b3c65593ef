"""`salun` (SalUn): random-label unlearning restricted to the weights most salient for the forget set.

Paper: Fan, Liu, Zhang, Wei, Wong, Liu, "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency in Both Image Classification and Generation" (ICLR'24);
code `OPTML-Group/Unlearn-Saliency`. Two steps:

1. Saliency mask: accumulate ∇θ CE over the forget set, take |·| per weight, and keep the top
   `mask_fraction` of all weights (one global ranking over every parameter tensor; the paper
   uses the median, i.e. 50 %).
2. RL (`random_label.relabel_steps`) where gradients outside the mask are zeroed, so only the
   salient weights move. Restricting the update is what keeps the retain/test accuracy close to
   the original while the forget data are relabelled away.

Works for class and item deletion alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, fresh_copy
from unlearn_ops.methods.random_label import Config as RandomLabelConfig
from unlearn_ops.methods.random_label import relabel_steps
from unlearn_ops.utils import resolve_device

EXACT = False
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config(RandomLabelConfig):
    """RL's settings (`random_label.Config`: the relabel loop is shared; `repair_steps` and
    `guard_steps` update the masked weights only), plus the saliency mask."""

    mask_fraction: float = 0.5  # share of weights kept by the saliency mask (paper: 0.5, the median)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_fraction <= 1.0:
            raise ValueError(f"salun: mask_fraction must be in (0, 1], not {self.mask_fraction!r}")


def saliency(model: nn.Module, forget: Part, dev: torch.device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """|∇θ Σ_batches CE(forget batch)| per parameter (the SalUn code's `generate_mask.py` gradient)."""
    model.eval()  # saliency of the trained model as it predicts, no dropout/BN updates
    model.zero_grad(set_to_none=True)
    for start in range(0, len(forget), batch_size):
        x, y = forget.x[start:start + batch_size].to(dev), forget.y[start:start + batch_size].to(dev)
        F.cross_entropy(model(x), y).backward()
    grads = {n: (p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def top_fraction_masks(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """0/1 masks keeping the `fraction` highest scores over all tensors together (ties by position)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = int(round(fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = chosen[start:start + s.numel()].view_as(s).to(s.dtype)
        start += s.numel()
    return masks


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev)
    masks = top_fraction_masks(saliency(new, splits.forget, dev), cfg.mask_fraction)
    log, details = relabel_steps(new, splits, cfg, dev, masks=masks)
    kept = int(sum(m.sum().item() for m in masks.values()))
    total = sum(m.numel() for m in masks.values())
    return UnlearnResult(new, "salun", details={**details, "masked_weights": kept, "total_weights": total},
                         log=log)
