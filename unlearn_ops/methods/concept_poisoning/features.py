"""Forgetting in the features (issue 24): the last feature block, the units of it that carry the
forgotten class, and their re-initialisation before the fine-tuning on retain ∪ poisons.

The paper's setting trains the head only (`trainable: head`): the class's evidence stays in the
features and a few relearning steps bring it back. The same concept inference that picks the
paper's target concepts (class-mean IntegratedGradients toward the class) ranks the penultimate
units here, and the top share is re-drawn from the layer's initial distribution, so the fine-tuning
has to rebuild them from retained and poisoned images only. Lab notes: docs/methods/concept_poisoning.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.methods.concept_poisoning.pcbm import ig_attributions


def _param_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def feature_block(model: nn.Module) -> nn.Module:
    """The last feature block before the head: the last child with parameters other than `head`
    (SmallCNN: `fc1`); a wrapper that holds every other parameter (ResNet's `body`) is searched
    one level down (`layer4`)."""
    head = _param_ids(model.head)
    rest = _param_ids(model) - head
    node = model
    while True:
        blocks = [m for m in node.children() if _param_ids(m) - head]
        if not blocks:
            raise NotApplicable(f"concept_poisoning: {type(model).__name__} has no feature block before its head")
        last = blocks[-1]
        if len(blocks) > 1 or _param_ids(last) - head != rest or not any(True for _ in last.children()):
            return last
        node = last  # one wrapper holding the whole body: look inside it


def feature_params(model: nn.Module) -> list[nn.Parameter]:
    """The head's parameters and the last feature block's (each once)."""
    head = list(model.head.parameters())
    seen = _param_ids(model.head)
    return head + [p for p in feature_block(model).parameters() if id(p) not in seen]


@torch.no_grad()
def class_units(model: nn.Module, x: torch.Tensor, targets: list[int], share: float, steps: int,
                device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Indices of the `share` of penultimate units with the largest mean IG attribution toward
    the forgotten classes on `x` (their non-member images). On the linear head IG with a zero
    baseline is W[c] ⊙ embed(x) exactly (tested in the PCBM tests), as for the paper's concepts."""
    model.eval()
    feats = torch.cat([model.embed(x[i:i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)])
    head = model.head
    score = torch.zeros(feats.shape[1], device=feats.device)
    for t in targets:
        target = torch.full((len(feats),), t, dtype=torch.long, device=feats.device)
        with torch.enable_grad():
            score += ig_attributions(head, feats, target, steps).mean(0).to(score.device)
    k = max(1, math.ceil(share * len(score)))
    return torch.topk(score, k).indices.sort().values.cpu()


@torch.no_grad()
def reset_units(model: nn.Module, units: torch.Tensor, seed: int) -> None:
    """Re-draw the incoming weights and bias of `units` in the Linear feature block, and their
    outgoing head weights, from PyTorch's default Linear initialisation (seeded)."""
    block = feature_block(model)
    if not isinstance(block, nn.Linear) or block.out_features != model.head.in_features:
        raise NotApplicable(f"concept_poisoning: reset_units needs a Linear last feature block feeding the head, "
                            f"not {type(block).__name__}; use reset_units: 0")
    gen = torch.Generator().manual_seed(seed)
    for layer, rows in ((block, True), (model.head, False)):
        bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform(a=√5) = U(±1/√fan_in), as nn.Linear
        w = layer.weight
        shape = (len(units), w.shape[1]) if rows else (w.shape[0], len(units))
        fresh = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        if rows:
            w[units] = fresh.to(w)
            if layer.bias is not None:
                layer.bias[units] = ((torch.rand(len(units), generator=gen) * 2 - 1) * bound).to(layer.bias)
        else:
            w[:, units] = fresh.to(w)


def frozen_split(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None:
    """(frozen bottom, trainable tail) of a model whose layout is known, else None. With
    `trainable: features` the SmallCNN's convolutions are frozen: their output is computed once
    and only fc1 → ReLU → head trains on it (same updates; the convolutions were ~2/3 of each step)."""
    from unlearn_ops.models.classifiers import SmallCNN

    if type(model) is not SmallCNN:
        return None
    return (lambda x: torch.flatten(model.features(x), 1)), nn.Sequential(model.fc1, model.relu, model.head)


@torch.no_grad()
def bottom_outputs(bottom: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device,
                   batch_size: int = 256) -> torch.Tensor:
    return torch.cat([bottom(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
