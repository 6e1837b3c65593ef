"""The path edit: which weights of the last two Linears an edit touches, and applying it (zeroing or
the paper's noise baselines; with `prune`, the cut neurons are killed and their constant output is
folded into the other classes' biases)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class PathEdit:
    """What an edit touches, as boolean masks."""

    out_mask: torch.Tensor    # (classes, d) entries of the last Linear's weight
    in_rows: torch.Tensor     # (d,) rows of the penultimate Linear (all False for pooled-feature heads)
    pruned: torch.Tensor      # (d,) neurons whose bias is zeroed and folded into the head (prune=True)


def path_masks(scope: str, neurons: dict[int, np.ndarray], num_classes: int, d: int,
               has_penultimate: bool, prune: bool) -> PathEdit:
    out_mask = torch.zeros(num_classes, d, dtype=torch.bool)
    in_rows = torch.zeros(d, dtype=torch.bool)
    for c, chosen in neurons.items():
        idx = torch.as_tensor(np.asarray(chosen), dtype=torch.long)
        if scope == "columns" or (scope == "paper" and not has_penultimate):
            out_mask[:, idx] = True          # pooled-feature heads: the neuron's column, every class
        else:
            out_mask[c, idx] = True          # the class's outgoing weights
            if scope == "paper":
                in_rows[idx] = True          # MLP heads: and the neuron's incoming row
    return PathEdit(out_mask, in_rows, in_rows.clone() if prune else torch.zeros(d, dtype=torch.bool))


def _noise(n: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    if mode == "gauss":
        return torch.randn(n, generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12) - 0.5
    return (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()      # Laplace(0, 1) by inverse CDF


@torch.no_grad()
def edit_tensors(edit: PathEdit, mode: str, noise_scale: float, generator: torch.Generator,
                 head_w: torch.Tensor, head_b: torch.Tensor | None,
                 pen_w: torch.Tensor | None = None, pen_b: torch.Tensor | None = None) -> None:
    """Apply `edit` in place. With `pen_w=None` the penultimate rows are left for `edited_acts`
    to simulate (the cheap path of the stopping rule); the real edit passes them."""
    if edit.pruned.any():
        # A zeroed row leaves the neuron emitting the constant relu(b_j), which still reaches the
        # classes whose weights are kept. Fold that constant into their biases, then kill the
        # neuron (b_j = 0: a dead ReLU passes no gradient, so fine-tuning cannot revive it).
        p = edit.pruned.to(head_w.device)
        const = F.relu(pen_b[p])
        head_b += (head_w[:, p] * ~edit.out_mask[:, edit.pruned].to(head_w.device)) @ const
        pen_b[p] = 0.0
    targets = [(head_w, edit.out_mask.to(head_w.device))]
    if pen_w is not None and edit.in_rows.any():
        targets.append((pen_w, edit.in_rows.to(pen_w.device)[:, None].expand_as(pen_w)))
    for weight, mask in targets:
        if mode == "zero":
            weight[mask] = 0.0
        else:
            weight[mask] += noise_scale * _noise(int(mask.sum()), mode, generator).to(weight.device, weight.dtype)


def edited_acts(acts: torch.Tensor, edit: PathEdit, pen_b: torch.Tensor | None) -> torch.Tensor:
    """Head-input activations after zeroing the penultimate rows: the neuron emits relu(b_j)."""
    if not edit.in_rows.any():
        return acts
    out = acts.clone()
    rows = edit.in_rows.to(acts.device)
    out[:, rows] = F.relu(pen_b[rows]).to(acts.dtype)
    return out
