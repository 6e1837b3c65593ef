"""Building blocks shared by the gradient-based baselines (not a method: no `Config`, not in METHODS).

The baselines from the literature (NegGrad+, RL, SalUn, SCRUB) all interleave mini-batches of the
forget set with mini-batches of the retain set. Their papers run full passes over the retain set;
we instead pair each forget batch with one retain batch, so the cost scales with the forget set
(the deletion request), not with the whole training set. That is what keeps them ≫ 10× cheaper
than retraining; each method's docs page says so.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part
from unlearn_ops.progress import track


def schedule_steps(n_forget: int, batch_size: int, epochs: float, min_steps: int) -> int:
    """Optimizer steps for `epochs` passes over the forget set, never fewer than `min_steps`.

    `min_steps` matters for small item deletions (40 samples = one batch per pass), where a pure
    epoch count would give a handful of steps.
    """
    if n_forget == 0:
        return 0
    per_epoch = math.ceil(n_forget / batch_size)
    return max(math.ceil(epochs * per_epoch), int(min_steps))


def cycle_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless mini-batch indices over range(n), reshuffled (seeded) after every pass."""
    if n == 0:
        raise ValueError("cannot draw batches from an empty part")
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield perm[start:start + batch_size]


def paired_batches(forget: Part, retain: Part, steps: int, batch_size: int, retain_batch_size: int,
                   seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` pairs (forget indices, retain indices); each forget batch comes with one retain batch.
    The steps are tracked (unlearn_ops.progress): a step counts once the caller asks for the next."""
    g = torch.Generator().manual_seed(seed)
    f_iter = cycle_indices(len(forget), batch_size, g)
    r_iter = cycle_indices(len(retain), retain_batch_size, g) if len(retain) else None
    with track("unlearning", steps) as bar:
        for _ in range(steps):
            yield next(f_iter), (next(r_iter) if r_iter is not None else torch.empty(0, dtype=torch.long))
            bar.advance()


def random_wrong_labels(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A uniformly random label different from the true one, per sample (seeded, drawn once)."""
    if num_classes < 2:
        raise ValueError("random relabelling needs at least two classes")
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, y.shape, generator=g)
    return (y + shift) % num_classes


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def take(part: Part, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors of `part` at `idx`, moved to `device`."""
    return part.x[idx].to(device), part.y[idx].to(device)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with gradients off: the teacher of a distillation loss."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton's KD loss KL(teacher ‖ student) at temperature t, ×t², batch mean (SCRUB's DistillKL)."""
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * (t * t) / student_logits.shape[0]
