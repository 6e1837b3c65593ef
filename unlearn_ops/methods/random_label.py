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

`labels: nearest` gives each forget sample the class the original finds most likely after the
true one (Boundary Shrink's choice, Chen et al. CVPR'23) instead of a random wrong class: the
samples a retrained model gets wrong are mostly confused with a neighbouring class, while a random
class pulls against features the whole class shares.

`retain_loss: kl` replaces the retain batch's cross-entropy with distillation from the original
model (KL at temperature `kd_T`, SCRUB's retain term). Why: on a memorizing model the retain
samples' CE is ≈ 0, so the true-label term pushes back only once a retain sample is already
misclassified, while the KL keeps the whole output distribution — the dark knowledge the wrong
labels erode — anchored from the first step.

`relabel: hard` (item deletion) relabels only as many forget samples as a model that never saw
them would get wrong — the original's error rate on non-members of the same classes — choosing
those the original recognises worst under one-pixel shifts; the other forget samples take part in
no loss. Why: a retrained model errs on ≈ its test error rate of the forget set
(random10: 12.2 % vs 12.6 %) and stays confident on the rest, while relabelling every sample
lowers the confidence of all of them. On the memorizing Fashion-MNIST CNN a one-pixel shift takes
the memorization away (forget 81 % vs test 79 % accuracy; unshifted 99.7 % vs 89 %), so low
shifted confidence marks a sample known only by heart. Measured (random10, docs/methods/random_label.md):
all three together come closest to retraining of every setting tried (Avg. Gap 1.45 pp at 13×).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods._loops import (
    cycle_indices,
    distill_kl,
    forget_class_set,
    frozen_copy,
    paired_batches,
    random_wrong_labels,
    sample_part,
    schedule_steps,
    take,
    trainable,
)
from unlearn_ops.methods.base import UnlearnResult, fresh_copy
from unlearn_ops.training import TrainConfig, accuracy, make_optimizer, predict_logits
from unlearn_ops.utils import resolve_device
from unlearn_ops.verify.mia import matched_nonmembers


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
    relabel: str = "all"       # all (as published) | hard (item deletion: see above)
    retain_loss: str = "ce"    # ce (true labels, as published) | kl (distil the original's outputs, see above)
    kd_T: float = 4.0          # temperature of the kl retain loss (SCRUB's)
    seed: int = 0              # random labels and batch order


def nearest_wrong_labels(model: nn.Module, forget: Part) -> torch.Tensor:
    """Per sample, the class `model` finds most likely after the true one (Boundary Shrink's choice,
    Chen et al. CVPR'23): the smallest move across a decision boundary."""
    logits = predict_logits(model, forget.x)
    logits[torch.arange(len(forget)), forget.y] = float("-inf")
    return logits.argmax(1)


CHOICES = {"labels": ("random", "nearest"), "relabel": ("all", "hard"), "retain_loss": ("ce", "kl")}
SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # one pixel right, left, down, up
NONMEMBER_SAMPLES = 5000  # enough to estimate an error rate to ±0.5 point, a fraction of the pool's cost


def shift_confidence(model: nn.Module, part: Part) -> torch.Tensor:
    """Per image, `model`'s mean probability of the true label over the four one-pixel shifts."""
    if part.x.dim() != 4:
        raise ValueError(f"relabel 'hard' needs images (N, C, H, W), got inputs of shape {tuple(part.x.shape)}")
    probs = torch.stack([torch.softmax(predict_logits(model, torch.roll(part.x, shift, dims=(2, 3))), 1)
                         for shift in SHIFTS]).mean(0)
    return probs[torch.arange(len(part)), part.y]


def hard_split(model: nn.Module, splits: Splits) -> tuple[Part, Part]:
    """(forget samples to relabel, retain set) for `relabel: hard`; the other forget samples are left out."""
    if forget_class_set(splits.forget, splits.retain):
        raise ValueError("relabel 'hard' is for item deletion; a whole-class deletion relabels every sample")
    nonmember = sample_part(matched_nonmembers(splits.forget, splits.nonmember), NONMEMBER_SAMPLES, seed=0)
    if len(nonmember) == 0:
        raise ValueError("relabel 'hard' needs non-members of the forget set's classes (splits.nonmember)")
    n = round((1.0 - accuracy(model, nonmember)) * len(splits.forget))
    order = torch.argsort(shift_confidence(model, splits.forget), stable=True)
    return splits.forget.subset(order[:n]), splits.retain


def relabel_steps(new: nn.Module, splits: Splits, cfg, dev: torch.device,
                  masks: dict[str, torch.Tensor] | None = None) -> tuple[list[str], dict[str, int]]:
    """The RL loop (in place on `new`), then `cfg.repair_steps` retain-only steps. With `masks`,
    gradients outside the masks are zeroed before each step, so only those weights move (SalUn).
    `cfg` needs the fields of `Config` above. Returns the log and the run's step / sample counts."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, not {getattr(cfg, key)!r}")
    forget, retain = hard_split(new, splits) if cfg.relabel == "hard" else (splits.forget, splits.retain)
    if len(forget) == 0:  # `hard` on a model that never errs on non-members: a retrained one would not either
        new.eval()
        nothing = "nothing to relabel: the original errs on no non-member of these classes"
        return [nothing], {"steps": 0, "repair_steps": 0, "relabelled": 0}
    wrong = (random_wrong_labels(forget.y, splits.num_classes, cfg.seed) if cfg.labels == "random"
             else nearest_wrong_labels(new, forget))
    teacher = frozen_copy(new) if cfg.retain_loss == "kl" else None
    opt = make_optimizer(trainable(new), TrainConfig(lr=cfg.lr, optimizer=cfg.optimizer))
    steps = schedule_steps(len(forget), cfg.batch_size, cfg.epochs, cfg.min_steps)
    named = [(n, p) for n, p in new.named_parameters() if p.requires_grad]
    log: list[str] = []

    def step(x: torch.Tensor, y: torch.Tensor, n_forget: int) -> float:
        """One update on a batch (`n_forget` relabelled samples first); with a teacher, the samples
        after them are distilled instead of fitted to their labels."""
        logits = new(x)
        if teacher is None or n_forget == len(x):
            loss = F.cross_entropy(logits, y)
        else:
            ce = F.cross_entropy(logits[:n_forget], y[:n_forget], reduction="sum")
            with torch.no_grad():
                target = teacher(x[n_forget:])
            kl = distill_kl(logits[n_forget:], target, cfg.kd_T) * (len(x) - n_forget)
            loss = (ce + kl) / len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if masks is not None:
            for name, p in named:
                if p.grad is not None:
                    p.grad.mul_(masks[name])
        opt.step()
        return loss.item()

    new.train()
    for n, (fi, ri) in enumerate(paired_batches(forget, retain, steps, cfg.batch_size,
                                                cfg.retain_batch_size, cfg.seed), start=1):
        xf, _ = take(forget, fi, dev)
        x, y = xf, wrong[fi].to(dev)
        if len(ri):
            xr, yr = take(retain, ri, dev)
            x, y = torch.cat([xf, xr]), torch.cat([y, yr])
        loss = step(x, y, n_forget=len(fi))
        if n == steps or n % 50 == 0:
            log.append(f"step {n}/{steps}: loss {loss:.4f}")
    repair = cfg.repair_steps if len(retain) else 0
    if repair:
        batches = cycle_indices(len(retain), cfg.retain_batch_size, torch.Generator().manual_seed(cfg.seed + 1))
        for n in range(1, repair + 1):
            loss = step(*take(retain, next(batches), dev), n_forget=0)
            if n == repair or n % 50 == 0:
                log.append(f"repair step {n}/{repair}: retain loss {loss:.4f}")
    new.eval()
    return log, {"steps": steps, "repair_steps": repair, "relabelled": len(forget)}


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev)
    log, details = relabel_steps(new, splits, cfg, dev)
    return UnlearnResult(new, "random_label", details=details, log=log)
