"""Relearning attack: how fast does the forgotten knowledge come back?

Fine-tune a *copy* of the model for a few steps on a small sample of the forgotten data mixed
with retained data, and measure forget accuracy (on held-out forget-class data) after each
checkpoint step. A model that truly lost the knowledge relearns like the retrained model
(slowly); an edit that only suppresses the output (e.g. zeroing a class's logit weights) bounces
back within 1–3 steps, although it passes every output-level metric.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part
from unlearn_ops.training import accuracy
from unlearn_ops.utils import resolve_device


def relearn(model: nn.Module, forget_sample: Part, retain_sample: Part, eval_part: Part,
            steps: tuple[int, ...] = (1, 3, 10), lr: float = 1e-3, seed: int = 0,
            device: str = "auto") -> dict[str, float]:
    """Adam on forget_sample ∪ retain_sample (one full batch per step); accuracy on `eval_part`
    (held-out samples of the forgotten data) before and after each step count in `steps`.

    Returns {"relearn_acc_0": …, "relearn_acc_1": …, …}. The caller's model is not modified.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    m = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    data = forget_sample.concat(retain_sample)
    x, y = data.x.to(dev), data.y.to(dev)
    out = {"relearn_acc_0": accuracy(m, eval_part)}
    for step in range(1, max(steps) + 1):
        m.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
        if step in steps:
            out[f"relearn_acc_{step}"] = accuracy(m, eval_part)
    return out
