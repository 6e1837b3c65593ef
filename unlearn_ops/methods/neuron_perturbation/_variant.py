"""Our utility-preserving variant of LRA-NPP (all off = the paper): a stopping rule that picks
k_p per class, and a short repair of the last Linear on non-member images only. Pruning (the
cut neurons killed, their constant folded into the other classes' biases) is part of the edit
(`path.edit_tensors`). Why and what it measured: docs/methods/neuron_perturbation.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.methods.neuron_perturbation.path import PathEdit, edit_tensors, edited_acts, path_masks
from unlearn_ops.methods.neuron_perturbation.rows import RoleActs
from unlearn_ops.utils import torch_threads

if TYPE_CHECKING:
    from unlearn_ops.methods.neuron_perturbation import Config


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """The stopping rule and the repair work on small (n × d) matrices. On a busy CPU, torch's
    intra-op threads only add synchronisation there (measured: 300 repair steps took 83 s with 2
    threads and 14 s with 1 on the shared 2-core machine), so run them on one thread."""
    if device.type != "cpu":
        yield
        return
    with torch_threads(1):
        yield

def stop_k_p(cfg: Config, c: int, order: np.ndarray, acts: torch.Tensor, head: nn.Linear,
             pen_b: torch.Tensor | None, num_classes: int) -> int:
    """Stopping rule: the smallest k_p on the grid whose single-class edit leaves the class's
    non-member images recognised at most `stop_accuracy` of the time (k_p itself if none does).
    Evaluated on cached head inputs, so each trial costs one small matrix product."""
    grid = list(range(cfg.k_p_step, cfg.k_p, cfg.k_p_step)) + [cfg.k_p]
    for k in grid:
        edit = path_masks(cfg.scope, {c: order[:k]}, num_classes, head.in_features, pen_b is not None, cfg.prune)
        w, b = head.weight.detach().clone(), head.bias.detach().clone()
        pb = pen_b.clone() if pen_b is not None else None
        edit_tensors(edit, "zero", 0.0, torch.Generator(), w, b, None, pb)
        hit = (F.linear(edited_acts(acts, edit, pb), w, b).argmax(1) == c).float().mean().item()
        if hit <= cfg.stop_accuracy:
            return k
    return cfg.k_p


def class_margin(logits: torch.Tensor, c: int, retained: list[int]) -> torch.Tensor:
    """z_c − max over the retained classes: < 0 means class c is not predicted."""
    return logits[:, c] - logits[:, retained].max(1).values


def repair_head(head: nn.Linear, acts: torch.Tensor, teacher: torch.Tensor, edit: PathEdit, cfg: Config,
                own: dict[int, torch.Tensor], goal: dict[int, float], retained: list[int]) -> dict[str, object]:
    """Two short fits of the last Linear on non-member head inputs (`acts`, after the cut); the
    cut entries stay zero.

    1. Utility: the retained classes' rows distil the original head's retained-class softmax
       (`teacher` logits) with L-BFGS (convex; at most `repair_steps` iterations). This gives the
       other classes back what the cut cost them.
    2. Forgetting: only the forgotten classes' weights move (Adam, `repair_lr`), pushing the
       class's logit on its own images (rows `own[c]`) below the retained classes' best until its
       median margin reaches `goal[c]` (at most `repair_steps` steps; without `repair_margin`,
       always `repair_steps`).
    """
    w, b = head.weight, head.bias
    keep = torch.as_tensor(retained, device=w.device)
    forgotten = torch.as_tensor(sorted(own), device=w.device)
    with torch.no_grad():
        target = torch.softmax(teacher[:, keep], 1)
    open_r = (~edit.out_mask[keep.cpu()]).to(w.device, w.dtype)
    w_r = w.detach()[keep].clone().requires_grad_()
    b_r = b.detach()[keep].clone().requires_grad_()
    lbfgs = torch.optim.LBFGS([w_r, b_r], lr=1.0, max_iter=cfg.repair_steps, history_size=10,
                              line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss = F.cross_entropy(F.linear(acts, w_r * open_r, b_r), target)
        loss.backward()
        return loss

    distil = float(lbfgs.step(closure).detach())
    with torch.no_grad():
        w[keep] = w_r * open_r
        b[keep] = b_r

    open_f = (~edit.out_mask[forgotten.cpu()]).to(w.device, w.dtype)
    w_f = w.detach()[forgotten].clone().requires_grad_()
    adam = torch.optim.Adam([w_f], lr=cfg.repair_lr)
    rows = {c: own[c].to(w.device) for c in own}
    goals = torch.tensor([goal[c] for c in sorted(own)], device=w.device)

    def margins(weights: torch.Tensor) -> torch.Tensor:
        """Per forgotten class: its logit minus the best retained logit, on its own images."""
        out = []
        for i, c in enumerate(sorted(own)):
            x = acts[rows[c]]
            z_c = x @ (weights[i] * open_f[i]) + b[c]
            out.append(z_c - F.linear(x, w[keep], b[keep]).max(1).values)
        return out

    steps = 0
    while steps < cfg.repair_steps:
        m = margins(w_f)
        medians = torch.stack([v.median() for v in m])
        if cfg.repair_margin and bool((medians <= goals).all()):
            break
        adam.zero_grad(set_to_none=True)
        torch.stack([F.relu(v - g).mean() for v, g in zip(m, goals, strict=True)]).sum().backward()
        adam.step()
        steps += 1
    with torch.no_grad():
        w[forgotten] = w_f * open_f
        final = {c: float(v.median()) for c, v in zip(sorted(own), margins(w_f), strict=True)}
    return {"distil_loss": distil, "steps": steps, "margin": final, "goal": goal}



def repair(head: nn.Linear, acts: RoleActs, teacher: torch.Tensor, edit: PathEdit, cfg: Config,
           classes: list[int], num_classes: int, pen_b: torch.Tensor | None,
           device: torch.device) -> tuple[dict[str, object], str]:
    """Distil the original head restricted to the retained classes (the forgotten ones get
    probability 0) on non-member images only: the other classes keep their behaviour and the
    forgotten classes' images go to what the original model ranks next. `teacher`: the original
    head's logits on `acts.all`; `pen_b`: the penultimate bias after the edit. Returns what the
    repair did and its log line."""
    retained = [k for k in range(num_classes) if k not in classes]
    # The goal: a class the model never learned sits, on its own images, as far below the top
    # as the original model puts it on *other* classes' images (median margin).
    foreign = teacher[acts.n_own:]
    goal = {c: float(class_margin(foreign, c, retained).median()) if len(foreign) else -float("inf")
            for c in classes}
    inputs = edited_acts(acts.all, edit, pen_b)
    with torch.enable_grad(), one_cpu_thread(device):
        done = repair_head(head, inputs, teacher, edit, cfg, acts.own, goal, retained)
    line = (f"repair: distillation loss {done['distil_loss']:.4f}, {done['steps']} forgetting steps, margins "
            + ", ".join(f"{c}: {done['margin'][c]:.2f} (goal {goal[c]:.2f})" for c in classes))
    return done, line
