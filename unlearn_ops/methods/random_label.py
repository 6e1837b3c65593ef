"""`random_label` (RL): fine-tune with random wrong labels on the forget set, true labels on the retain set.

Golatkar et al. (CVPR'20) as standardised by the OPTML-Group protocol; `salun` reuses `relabel_steps`.
The item-deletion options (`labels`, `relabel`, `retain_loss`, `soft_weight`, `guard_steps`,
`repair_steps`), why they exist and what they measured: docs/methods/random_label.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods._loops import (
    cycle_indices,
    distill_kl,
    frozen_copy,
    paired_batches,
    random_wrong_labels,
    schedule_steps,
    take,
    trainable,
)
from unlearn_ops.methods.base import (
    ALL_KINDS,
    NotApplicable,
    UnlearnResult,
    check_choices,
    check_positive,
    fresh_copy,
    method_of,
)
from unlearn_ops.training import OPTIMIZERS, TrainConfig, accuracy, make_optimizer, predict_logits
from unlearn_ops.utils import resolve_device
from unlearn_ops.verify.mia import matched_nonmembers, true_label_confidence

EXACT = False
REQUEST_KINDS = ALL_KINDS  # relabel: hard / match serve item deletions only (NotApplicable on a class)
CHOICES = {"labels": ("random", "nearest"), "relabel": ("all", "hard", "match"), "retain_loss": ("ce", "kl"),
           "optimizer": OPTIMIZERS}


@dataclass(frozen=True)
class Config:
    epochs: float = 1.0        # passes over the forget set (SalUn code: 10 epochs over forget ∪ retain)
    min_steps: int = 30        # at least this many steps, so small item deletions get a real update
    lr: float = 1e-3           # ours (Adam); SalUn's RL uses SGD, lr ≈ 0.01 on CIFAR-10 / ResNet-18
    batch_size: int = 64       # forget samples per step
    retain_batch_size: int = 128  # retain samples per step (SalUn/Sparse code: 256, paper tables: 128)
    optimizer: str = "adam"    # adam | sgd
    repair_steps: int = 0      # retain-only steps (true labels) after the relabel steps; 0 = RL as published
    labels: str = "random"     # random (as published) | nearest (the original's most likely wrong class)
    relabel: str = "all"       # all (as published) | hard | match (item deletion only; see the docs page)
    match_below: float = 0.9   # relabel: match fits targets below this true-label probability, leaves the rest
    soft_weight: float = 1.0   # relabel: match: weight of the soft-target samples' loss (1 = unweighted)
    retain_loss: str = "ce"    # ce (true labels, as published) | kl (distil the original's outputs)
    kd_T: float = 4.0          # temperature of the kl retain loss (SCRUB's)
    guard_steps: int = 0       # extra steps holding the retain samples the relabel steps got wrong (0 = off)
    seed: int = 0              # random labels and batch order

    def __post_init__(self) -> None:
        check_choices(self, CHOICES)
        check_positive(self, "epochs", "lr", "batch_size", "retain_batch_size", "kd_T")
        if self.guard_steps < 0 or self.repair_steps < 0:
            raise ValueError(f"{method_of(self)}: guard_steps and repair_steps must be ≥ 0, not "
                             f"{self.guard_steps!r} / {self.repair_steps!r}")
        if not 0.0 < self.match_below <= 1.0:
            raise ValueError(f"{method_of(self)}: match_below must be a probability in (0, 1], not {self.match_below!r}")
        if self.soft_weight != 1.0 and (self.relabel != "match" or self.soft_weight <= 0):
            raise ValueError(f"{method_of(self)}: soft_weight weights the soft targets of relabel 'match': it needs "
                             f"relabel 'match' and a weight > 0 (got relabel {self.relabel!r}, soft_weight "
                             f"{self.soft_weight!r})")


def nearest_wrong_labels(model: nn.Module, forget: Part) -> torch.Tensor:
    """Per sample, the class `model` finds most likely after the true one (Boundary Shrink's choice,
    Chen et al. CVPR'23): the smallest move across a decision boundary."""
    logits = predict_logits(model, forget.x)
    logits[torch.arange(len(forget)), forget.y] = float("-inf")
    return logits.argmax(1)


SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # one pixel right, left, down, up
NONMEMBER_SAMPLES = 5000  # enough to estimate an error rate to ±0.5 point, a fraction of the pool's cost


def shift_probs(model: nn.Module, part: Part) -> torch.Tensor:
    """Per image, `model`'s softmax averaged over the four one-pixel shifts, shape (n, classes)."""
    if part.x.dim() != 4:
        raise NotApplicable(f"relabel 'hard' / 'match' needs images (N, C, H, W), got inputs of shape "
                            f"{tuple(part.x.shape)}")
    return torch.stack([torch.softmax(predict_logits(model, torch.roll(part.x, shift, dims=(2, 3))), 1)
                        for shift in SHIFTS]).mean(0)


def shift_confidence(model: nn.Module, part: Part) -> torch.Tensor:
    """Per image, `model`'s mean probability of the true label over the four one-pixel shifts."""
    return shift_probs(model, part)[torch.arange(len(part)), part.y]


def nonmember_sample(splits: Splits, how: str) -> Part:
    """Up to NONMEMBER_SAMPLES non-members of the forget set's classes: what `hard` / `match` imitate."""
    if splits.removed_classes:
        raise NotApplicable(f"relabel {how!r} is for item deletion; a whole-class deletion relabels every sample")
    nonmember = matched_nonmembers(splits.forget, splits.nonmember).sample(NONMEMBER_SAMPLES, seed=0)
    if len(nonmember) == 0:
        raise NotApplicable(f"relabel {how!r} needs non-members of the forget set's classes (splits.nonmember)")
    return nonmember


def hard_split(model: nn.Module, splits: Splits) -> Part:
    """The forget samples `relabel: hard` relabels; the other forget samples are left out."""
    nonmember = nonmember_sample(splits, "hard")
    n = round((1.0 - accuracy(model, nonmember)) * len(splits.forget))
    order = torch.argsort(shift_confidence(model, splits.forget), stable=True)
    return splits.forget.subset(order[:n])


def matched_targets(model: nn.Module, splits: Splits) -> torch.Tensor:
    """Soft targets (n, classes) for `relabel: match`: the forget sample ranked r-th of n by
    one-pixel-shift confidence gets, as its true-label probability, the (r + ½)/n quantile of
    `model`'s true-label confidence on non-members; the rest of the mass goes to the other classes
    in proportion to `model`'s shifted-input probabilities (its confusions on inputs it never saw)."""
    nonmember = nonmember_sample(splits, "match")
    forget, n = splits.forget, len(splits.forget)
    rows = torch.arange(n)
    confidence = torch.from_numpy(true_label_confidence(model, nonmember))
    probs = shift_probs(model, forget)
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.argsort(probs[rows, forget.y], stable=True)] = rows  # same order as shift_confidence
    true_p = torch.quantile(confidence.double(), (rank.double() + 0.5) / n).float()
    others = probs.clone()
    others[rows, forget.y] = 0.0
    targets = others / others.sum(1, keepdim=True).clamp_min(1e-12) * (1.0 - true_p)[:, None]
    targets[rows, forget.y] = true_p
    return targets


def match_split(model: nn.Module, splits: Splits, below: float) -> tuple[Part, torch.Tensor, int]:
    """(forget samples `relabel: match` trains on, their targets, how many of them are hard labels)."""
    targets = matched_targets(model, splits)
    forget = splits.forget
    top = targets.argmax(1)
    wrong = top != forget.y  # a never-seen model errs here, and errs confidently: hard label
    targets[wrong] = F.one_hot(top[wrong], splits.num_classes).to(targets.dtype)
    keep = torch.nonzero(wrong | (targets[torch.arange(len(forget)), forget.y] < below)).flatten()
    return forget.subset(keep), targets[keep], int(wrong.sum())


def retain_wrong(model: nn.Module, retain: Part) -> torch.Tensor:
    """Indices of the retain samples `model` classifies wrongly (what `guard_steps` holds)."""
    return torch.nonzero(predict_logits(model, retain.x).argmax(1) != retain.y).flatten()


def relabel_targets(model: nn.Module, splits: Splits, cfg: Config) -> tuple[Part, torch.Tensor, int]:
    """The forget samples the relabel steps train on, their targets (wrong labels, or soft rows
    under `relabel: match`) and how many of them carry a hard wrong label."""
    if cfg.relabel == "match":
        return match_split(model, splits, cfg.match_below)
    forget = hard_split(model, splits) if cfg.relabel == "hard" else splits.forget
    labels = (random_wrong_labels(forget.y, splits.num_classes, cfg.seed) if cfg.labels == "random"
              else nearest_wrong_labels(model, forget))
    return forget, labels, len(forget)


class _Update:
    """One optimizer step on a batch whose first `n_forget` samples are relabelled forget samples
    (their loss weighted by `w`). With a teacher (`retain_loss: kl`) the samples after them are
    distilled instead of fitted to their labels; with `masks`, gradients outside the masks are
    zeroed before the step, so only those weights move (SalUn)."""

    def __init__(self, model: nn.Module, cfg: Config, masks: dict[str, torch.Tensor] | None) -> None:
        self.model, self.kd_T, self.masks = model, cfg.kd_T, masks
        self.teacher = frozen_copy(model) if cfg.retain_loss == "kl" else None
        self.opt = make_optimizer(trainable(model), TrainConfig(lr=cfg.lr, optimizer=cfg.optimizer))
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor, n_forget: int, w: torch.Tensor | None) -> torch.Tensor:
        logits = self.model(x)
        if self.teacher is None or n_forget == len(x):
            if w is None:
                return F.cross_entropy(logits, y)
            per_sample = F.cross_entropy(logits, y, reduction="none")
            return torch.cat([per_sample[:n_forget] * w, per_sample[n_forget:]]).mean()
        if w is None:
            ce = F.cross_entropy(logits[:n_forget], y[:n_forget], reduction="sum")
        else:
            ce = (F.cross_entropy(logits[:n_forget], y[:n_forget], reduction="none") * w).sum()
        with torch.no_grad():
            target = self.teacher(x[n_forget:])
        kl = distill_kl(logits[n_forget:], target, self.kd_T) * (len(x) - n_forget)
        return (ce + kl) / len(x)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, n_forget: int, w: torch.Tensor | None = None) -> float:
        loss = self.loss(x, y, n_forget, w)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.masks is not None:
            for name, p in self.named:
                if p.grad is not None:
                    p.grad.mul_(self.masks[name])
        self.opt.step()
        return loss.item()


Guarded = tuple[Part, Iterator[torch.Tensor]]  # the retain samples held by guard steps, and their batches


def _batch(forget: Part, targets: torch.Tensor, fi: torch.Tensor, retain: Part, ri: torch.Tensor,
           guarded: Guarded | None, num_classes: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The forget batch with its targets, then the retain batch (on a guard step, its second half
    drawn from the held samples); soft forget targets turn the retain labels into one-hot rows."""
    xf, _ = take(forget, fi, dev)
    x, y = xf, targets[fi].to(dev)
    if not len(ri):
        return x, y
    if guarded is not None:
        held, held_batches = guarded
        half = len(ri) // 2
        (xr, yr), (xg, yg) = take(retain, ri[:half], dev), take(held, next(held_batches)[:len(ri) - half], dev)
        xr, yr = torch.cat([xr, xg]), torch.cat([yr, yg])
    else:
        xr, yr = take(retain, ri, dev)
    if y.is_floating_point():
        yr = F.one_hot(yr, num_classes).to(y.dtype)
    return torch.cat([xf, xr]), torch.cat([y, yr])


def _relabel_and_guard(update: _Update, forget: Part, targets: torch.Tensor, weights: torch.Tensor | None,
                       splits: Splits, cfg: Config, steps: int, dev: torch.device, log: list[str]) -> tuple[int, int]:
    """`steps` relabel steps, then up to `cfg.guard_steps` guard steps (none when the relabel steps
    got no retain sample wrong). Returns (guard steps run, retain samples held)."""
    retain = splits.retain
    guard = cfg.guard_steps if len(retain) else 0
    total, guarded, pool = steps + guard, None, 0
    update.model.train()
    for n, (fi, ri) in enumerate(paired_batches(forget, retain, total, cfg.batch_size,
                                                cfg.retain_batch_size, cfg.seed), start=1):
        x, y = _batch(forget, targets, fi, retain, ri, guarded, splits.num_classes, dev)
        loss = update(x, y, n_forget=len(fi), w=None if weights is None else weights[fi].to(dev))
        if n == total or n % 50 == 0:
            log.append(f"step {n}/{total}: loss {loss:.4f}")
        if n == steps and guard:
            held = retain.subset(retain_wrong(update.model, retain))
            pool = len(held)
            log.append(f"guard: {pool} retain samples wrong after {steps} relabel steps"
                       + ("" if pool else ", no guard steps needed"))
            if not pool:
                return 0, 0
            size = cfg.retain_batch_size - cfg.retain_batch_size // 2
            guarded = held, cycle_indices(pool, size, torch.Generator().manual_seed(cfg.seed + 3))
    return guard, pool


def _repair(update: _Update, retain: Part, cfg: Config, dev: torch.device, log: list[str]) -> int:
    """`cfg.repair_steps` retain-only steps with true labels; returns how many ran."""
    repair = cfg.repair_steps if len(retain) else 0
    if repair:
        batches = cycle_indices(len(retain), cfg.retain_batch_size, torch.Generator().manual_seed(cfg.seed + 1))
        for n in range(1, repair + 1):
            loss = update(*take(retain, next(batches), dev), n_forget=0)
            if n == repair or n % 50 == 0:
                log.append(f"repair step {n}/{repair}: retain loss {loss:.4f}")
    return repair


def relabel_steps(new: nn.Module, splits: Splits, cfg: Config, dev: torch.device,
                  masks: dict[str, torch.Tensor] | None = None) -> tuple[list[str], dict[str, int]]:
    """The RL loop (in place on `new`), its guard steps, then its repair steps. With `masks`, only
    the masked weights move (SalUn). Returns the log and the run's step / sample counts."""
    forget, targets, relabelled = relabel_targets(new, splits, cfg)
    counts = {"relabelled": relabelled, "softened": len(forget) - relabelled}
    if len(forget) == 0:  # hard / match on a model sure of its non-members: a retrained one would be too
        new.eval()
        nothing = ("nothing to relabel: the forget set is empty" if cfg.relabel == "all" else
                   "nothing to relabel: the original is as sure of non-members of these classes as of the forget set")
        return [nothing], {"steps": 0, "guard_steps": 0, "guard_pool": 0, "repair_steps": 0, **counts}
    # per trained forget sample; None = all 1 (the published loss, bit for bit); hard labels are one-hot rows
    weights = torch.where(targets.max(1).values < 1, cfg.soft_weight, 1.0) if cfg.soft_weight != 1.0 else None
    update = _Update(new, cfg, masks)
    steps = schedule_steps(len(forget), cfg.batch_size, cfg.epochs, cfg.min_steps)
    log: list[str] = []
    guard, pool = _relabel_and_guard(update, forget, targets, weights, splits, cfg, steps, dev, log)
    repair = _repair(update, splits.retain, cfg, dev, log)
    new.eval()
    return log, {"steps": steps, "guard_steps": guard, "guard_pool": pool, "repair_steps": repair, **counts}


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev)
    log, details = relabel_steps(new, splits, cfg, dev)
    return UnlearnResult(new, "random_label", details=details, log=log)
