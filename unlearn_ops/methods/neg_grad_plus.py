"""`neg_grad_plus` (NegGrad+): descend on the retain set while ascending on the forget set.

Paper: Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine Unlearning"
(NeurIPS'23), the baseline next to SCRUB; also a strong baseline in DeepUnlearn. Each step takes
one forget batch and one retain batch and minimises

    alpha · CE(retain) − (1 − alpha) · CE(forget)

Plain gradient ascent (alpha = 0) is the classic way to over-forget: the forget loss is
unbounded, so the model is pushed away from the forget data until it breaks (our over-forgetting
canary). The retain term anchors utility. Works for class and item deletion alike.

`stop_at_nonmember_accuracy` (off by default) stops the ascent once the forget set is predicted
no better than non-members of its classes — where a model that never saw it would be. It is the
"rewind" idea of the same paper (SCRUB+R picks the checkpoint whose forget error matches a
validation error) as a stopping rule; it needs the non-member pool (`Splits.nonmember`), which the
pipeline always has. For item deletion the fixed step count either does nothing (the default
alpha) or overshoots; the rule makes the step budget an upper bound instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods._loops import paired_batches, schedule_steps, take, trainable
from unlearn_ops.methods.base import ALL_KINDS, NotApplicable, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.training import OPTIMIZERS, TrainConfig, accuracy, make_optimizer
from unlearn_ops.utils import resolve_device
from unlearn_ops.verify.mia import matched_nonmembers

EXACT = False
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    alpha: float = 0.99        # weight of the retain CE; the forget term gets 1 − alpha (SCRUB paper's
    # NegGrad+ tunes this per setting, ≈0.9–0.999; 0 = plain gradient ascent, the over-forgetting canary)
    epochs: float = 1.0        # passes over the forget set (the papers run 5–10 epochs of the whole data)
    min_steps: int = 30        # at least this many steps, so small item deletions get a real update
    lr: float = 1e-4           # ours (Adam; a tenth of the base model's lr: at 1e-3 the ascent wrecked the
    # Fashion-MNIST CNN, retained test accuracy 0.92 → 0.69); SCRUB's code uses SGD with a tuned lr
    batch_size: int = 64       # forget samples per step
    retain_batch_size: int = 128  # retain samples per step (the base model's batch size)
    optimizer: str = "adam"    # adam | sgd
    max_grad_norm: float = 5.0  # clip the gradient norm: the ascent term is unbounded (0 = no clipping)
    stop_at_nonmember_accuracy: bool = False  # stop once forget accuracy ≤ same-class non-member accuracy
    check_every: int = 5       # steps between those checks
    check_samples: int = 1000  # forget / non-member samples per check (seeded subsets; 0 = all)
    seed: int = 0              # batch order

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"neg_grad_plus: alpha must be in [0, 1], not {self.alpha!r}")
        check_positive(self, "epochs", "lr", "batch_size", "retain_batch_size", "check_every")
        check_choices(self, {"optimizer": OPTIMIZERS})


class _Stop:
    """The stopping rule: forget accuracy has reached the non-members' (both on fixed subsets)."""

    def __init__(self, splits: Splits, cfg: Config) -> None:
        nonmember = matched_nonmembers(splits.forget, splits.nonmember)
        if len(nonmember) == 0:
            raise NotApplicable("neg_grad_plus stop_at_nonmember_accuracy needs non-members of the forget set's "
                                "classes (Splits.nonmember is empty for them)")
        self.forget: Part = splits.forget.sample(cfg.check_samples, cfg.seed)
        self.nonmember: Part = nonmember.sample(cfg.check_samples, cfg.seed + 1)

    def reached(self, model: nn.Module) -> tuple[bool, float, float]:
        f, n = accuracy(model, self.forget), accuracy(model, self.nonmember)  # eval mode, then restored
        return f <= n, f, n


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev).train()
    opt = make_optimizer(trainable(new), TrainConfig(lr=cfg.lr, optimizer=cfg.optimizer))
    steps = schedule_steps(len(splits.forget), cfg.batch_size, cfg.epochs, cfg.min_steps)
    stop = _Stop(splits, cfg) if cfg.stop_at_nonmember_accuracy else None
    log: list[str] = []
    details: dict = {"steps": steps}
    last_f = last_r = float("nan")
    for step, (fi, ri) in enumerate(paired_batches(splits.forget, splits.retain, steps, cfg.batch_size,
                                                   cfg.retain_batch_size, cfg.seed), start=1):
        xf, yf = take(splits.forget, fi, dev)
        loss_f = F.cross_entropy(new(xf), yf)
        loss = -(1.0 - cfg.alpha) * loss_f
        if cfg.alpha > 0 and len(ri):
            xr, yr = take(splits.retain, ri, dev)
            loss_r = F.cross_entropy(new(xr), yr)
            loss = loss + cfg.alpha * loss_r
            last_r = loss_r.item()
        last_f = loss_f.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(trainable(new), cfg.max_grad_norm)
        opt.step()
        if step == steps or step % 50 == 0:
            log.append(f"step {step}/{steps}: forget CE {last_f:.4f}, retain CE {last_r:.4f}")
        if stop is not None and (step % cfg.check_every == 0 or step == steps):
            reached, acc_f, acc_n = stop.reached(new)
            details.update(steps_run=step, forget_accuracy=acc_f, nonmember_accuracy=acc_n, stopped_early=reached)
            if reached:
                log.append(f"step {step}/{steps}: forget accuracy {acc_f:.4f} ≤ non-member {acc_n:.4f}, stopping")
                break
    return UnlearnResult(new.eval(), "neg_grad_plus", details=details, log=log)
