"""`random_label` (RL): fine-tune with random wrong labels on the forget set, true labels on the retain set.

Paper: Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net" (CVPR'20) introduced
random relabelling as a baseline; the OPTML-Group protocol (Sparse NeurIPS'23, SalUn ICLR'24)
made it a standard one, and SalUn is RL restricted to salient weights (`salun.py` reuses
`relabel_steps` below). Each forget sample gets one random label ≠ its true label (drawn once,
seeded); each step trains on a forget batch with those labels plus a retain batch with true
labels (one mean CE over both). The retain batch keeps utility; the wrong labels erase what the
model knew about the forget samples. Works for class and item deletion alike.

`repair_steps` (default 0 = the published RL) adds retain-only steps after the relabel steps, to
win back the retain / test accuracy the wrong labels cost on a memorizing model (random10: −6
points). Measured there (docs/methods/random_label.md): it does win them back, but the forget
samples' accuracy climbs back with them (91 → 96–97 %, retrained 88 %), so RL's item forgetting
is largely general damage that the repair undoes; Avg. Gap got worse. Kept for that audit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods._loops import (
    cycle_indices,
    paired_batches,
    random_wrong_labels,
    schedule_steps,
    take,
    trainable,
)
from unlearn_ops.methods.base import UnlearnResult, fresh_copy
from unlearn_ops.training import TrainConfig, make_optimizer
from unlearn_ops.utils import resolve_device


@dataclass(frozen=True)
class Config:
    epochs: float = 1.0        # passes over the forget set (SalUn code: 10 epochs over forget ∪ retain)
    min_steps: int = 30        # at least this many steps, so small item deletions get a real update
    lr: float = 1e-3           # ours (Adam); SalUn's RL uses SGD, lr ≈ 0.01 on CIFAR-10 / ResNet-18
    batch_size: int = 64       # forget samples per step
    retain_batch_size: int = 128  # retain samples per step (SalUn/Sparse code: 256, paper tables: 128)
    optimizer: str = "adam"    # adam | sgd
    repair_steps: int = 0      # retain-only steps (true labels) after the relabel steps; 0 = RL as published
    seed: int = 0              # random labels and batch order


def relabel_steps(new: nn.Module, splits: Splits, cfg, dev: torch.device,
                  masks: dict[str, torch.Tensor] | None = None) -> list[str]:
    """The RL loop (in place on `new`), then `cfg.repair_steps` retain-only steps. With `masks`,
    gradients outside the masks are zeroed before each step, so only those weights move (SalUn).
    `cfg` needs the fields of `Config` above."""
    wrong = random_wrong_labels(splits.forget.y, splits.num_classes, cfg.seed)
    opt = make_optimizer(trainable(new), TrainConfig(lr=cfg.lr, optimizer=cfg.optimizer))
    steps = schedule_steps(len(splits.forget), cfg.batch_size, cfg.epochs, cfg.min_steps)
    named = [(n, p) for n, p in new.named_parameters() if p.requires_grad]
    log: list[str] = []

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = F.cross_entropy(new(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            for name, p in named:
                if p.grad is not None:
                    p.grad.mul_(masks[name])
        opt.step()
        return loss.item()

    new.train()
    for n, (fi, ri) in enumerate(paired_batches(splits.forget, splits.retain, steps, cfg.batch_size,
                                                cfg.retain_batch_size, cfg.seed), start=1):
        xf, _ = take(splits.forget, fi, dev)
        x, y = xf, wrong[fi].to(dev)
        if len(ri):
            xr, yr = take(splits.retain, ri, dev)
            x, y = torch.cat([xf, xr]), torch.cat([y, yr])
        loss = step(x, y)
        if n == steps or n % 50 == 0:
            log.append(f"step {n}/{steps}: loss {loss:.4f}")
    repair = cfg.repair_steps if len(splits.retain) else 0
    if repair:
        batches = cycle_indices(len(splits.retain), cfg.retain_batch_size, torch.Generator().manual_seed(cfg.seed + 1))
        for n in range(1, repair + 1):
            loss = step(*take(splits.retain, next(batches), dev))
            if n == repair or n % 50 == 0:
                log.append(f"repair step {n}/{repair}: retain loss {loss:.4f}")
    new.eval()
    return log


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev)
    log = relabel_steps(new, splits, cfg, dev)
    steps = schedule_steps(len(splits.forget), cfg.batch_size, cfg.epochs, cfg.min_steps)
    return UnlearnResult(new, "random_label", details={"steps": steps, "repair_steps": cfg.repair_steps}, log=log)
