"""`scrub` (SCRUB): a student moves away from its teacher on the forget set and stays close on the retain set.

Paper: Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine Unlearning"
(NeurIPS'23); code `meghdadk/SCRUB`. The teacher is the original model (frozen), the student
starts as a copy of it. Training alternates, per epoch:

* max-steps (only in the first `max_epochs` epochs): one pass over the forget set minimising
  −KL(teacher ‖ student) at temperature `kd_T` (the student disagrees with the teacher there);
* min-steps: `retain_steps` retain batches minimising γ·CE + α·KL(teacher ‖ student) (the student
  keeps the teacher's behaviour and accuracy there).

The KL is Hinton's distillation loss (scaled by T², summed over classes, averaged over the batch),
as in the SCRUB code. Differences from the paper's code: the min-steps run `retain_steps`
batches per epoch rather than a full pass over the retain set (so the cost scales with the
request, not the training set), and SCRUB+R's rewind is not implemented. Works for class and
item deletion alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods._loops import cycle_indices, distill_kl, frozen_copy, take, trainable
from unlearn_ops.methods.base import ALL_KINDS, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.training import OPTIMIZERS, TrainConfig, make_optimizer
from unlearn_ops.utils import resolve_device

EXACT = False
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    alpha: float = 0.001       # weight of KL(teacher‖student) on the retain set (SCRUB code: 0.001)
    gamma: float = 0.99        # weight of CE on the retain set (SCRUB code: 0.99)
    kd_T: float = 4.0          # distillation temperature (SCRUB code: 4)
    epochs: int = 3            # SCRUB's `sgda_epochs` (paper code: 3–10 depending on the setting)
    max_epochs: int = 2        # SCRUB's `msteps`: epochs that include a max-pass on the forget set
    retain_steps: int = 30     # min-step batches per epoch (SCRUB: a full retain pass; capped for speed)
    lr: float = 5e-4           # SCRUB code: SGD, lr 5e-4, momentum 0.9, weight decay 5e-4
    optimizer: str = "adam"    # adam | sgd. Ours: adam (the base models are Adam-trained; SGD at
    # SCRUB's lr barely moves them in a few steps)
    weight_decay: float = 5e-4  # SCRUB code: 5e-4
    batch_size: int = 64       # forget samples per max-step (SCRUB small-scale code: 16–64)
    retain_batch_size: int = 128  # retain samples per min-step (SCRUB code: 128)
    seed: int = 0              # batch order

    def __post_init__(self) -> None:
        if self.max_epochs > self.epochs:
            raise ValueError(f"scrub: max_epochs ({self.max_epochs}) cannot exceed epochs ({self.epochs})")
        check_positive(self, "kd_T", "lr", "batch_size", "retain_batch_size")
        check_choices(self, {"optimizer": OPTIMIZERS})


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    teacher = frozen_copy(model).to(dev)
    student = fresh_copy(model).to(dev).train()
    opt = make_optimizer(trainable(student), TrainConfig(lr=cfg.lr, optimizer=cfg.optimizer,
                                                         weight_decay=cfg.weight_decay))
    g = torch.Generator().manual_seed(cfg.seed)
    r_iter = cycle_indices(len(splits.retain), cfg.retain_batch_size, g) if len(splits.retain) else None
    log: list[str] = []
    max_steps = min_steps = 0
    for epoch in range(1, cfg.epochs + 1):
        kl_f = ce_r = float("nan")
        if epoch <= cfg.max_epochs and len(splits.forget):
            perm = torch.randperm(len(splits.forget), generator=g)
            for start in range(0, len(perm), cfg.batch_size):
                x, _ = take(splits.forget, perm[start:start + cfg.batch_size], dev)
                with torch.no_grad():
                    t_logits = teacher(x)
                kl = distill_kl(student(x), t_logits, cfg.kd_T)
                opt.zero_grad(set_to_none=True)
                (-kl).backward()
                opt.step()
                kl_f, max_steps = kl.item(), max_steps + 1
        for _ in range(cfg.retain_steps if r_iter is not None else 0):
            x, y = take(splits.retain, next(r_iter), dev)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            ce = F.cross_entropy(s_logits, y)
            loss = cfg.gamma * ce + cfg.alpha * distill_kl(s_logits, t_logits, cfg.kd_T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ce_r, min_steps = ce.item(), min_steps + 1
        log.append(f"epoch {epoch}: forget KL {kl_f:.4f}, retain CE {ce_r:.4f}")
    return UnlearnResult(student.eval(), "scrub", details={"max_steps": max_steps, "min_steps": min_steps}, log=log)
