"""The last Linear of the model and LRP relevance at its input: which neurons carry a prediction."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from unlearn_ops.methods.base import NotApplicable

if TYPE_CHECKING:
    from unlearn_ops.methods.neuron_perturbation import Config

BACKENDS = ("closed_form", "captum")


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise NotApplicable(f"neuron_perturbation: the model has no module {name!r}") from err


def _linear(model: nn.Module, name: str) -> nn.Linear:
    module = _module(model, name)
    if not isinstance(module, nn.Linear):
        raise NotApplicable(f"neuron_perturbation: {name!r} must be an nn.Linear, got {type(module).__name__}")
    return module


def head_of(model: nn.Module, cfg: Config) -> tuple[nn.Linear, nn.Linear | None]:
    """(last Linear, penultimate Linear or None for pooled-feature heads)."""
    head = _linear(model, cfg.layer)
    if not cfg.penultimate:
        return head, None
    pen = _module(model, cfg.penultimate)
    if not isinstance(pen, nn.Linear) or pen.out_features != head.in_features:
        raise NotApplicable(f"neuron_perturbation: {cfg.penultimate!r} must be the nn.Linear feeding {cfg.layer!r}")
    return head, pen


@torch.no_grad()
def head_inputs(model: nn.Module, head: nn.Module, x: torch.Tensor, device: torch.device,
                batch_size: int = 512) -> torch.Tensor:
    """Activations at the input of `head` for `x` (eval mode, via a forward hook), on `device`."""
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach().flatten(1)))
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was)
    return torch.cat(seen)


# ----------------------------------------------------------------------------- relevance
def relevance_from_acts(head: nn.Linear, acts: torch.Tensor, backend: str = "closed_form",
                        epsilon: float = 0.1) -> torch.Tensor:
    """LRP-ε relevance of the neurons at the input of the last Linear `head` (activations `acts`)
    for each image's predicted class; shape (n, in_features).

    closed_form: R_j = a_j·W[ĉ,j]·z_ĉ / (z_ĉ + ε·sign z_ĉ): the ε-rule applied once, relevance
    started from the predicted logit z_ĉ (standard LRP, captum's convention). TorchLRP, which the
    paper used, starts from 1 instead: the same ranking whenever z_ĉ > 0.
    captum: `captum.attr.LayerLRP` (ε-rule) at that layer, run on a *deep copy of the layer alone*
    fed with the activations. The relevance at the input of the last Linear depends only on that
    Linear, captum has no rule for some modules of other architectures, and it leaves `rule`
    attributes behind (or a broken model after a failed call), so the caller's model is never
    handed to it. The two backends agree to float precision.
    """
    with torch.no_grad():
        logits = head(acts)
    pred = logits.argmax(1)
    if backend == "closed_form":
        w = head.weight.detach()[pred]                       # (n, d): the predicted class's weights
        z = logits.gather(1, pred[:, None])
        return acts * w * z / (z + epsilon * torch.where(z >= 0, 1.0, -1.0))
    if backend == "captum":
        from captum.attr import LayerLRP
        from captum.attr._utils.lrp_rules import EpsilonRule

        layer = copy.deepcopy(head).cpu().float().eval()
        layer.rule = EpsilonRule(epsilon=epsilon)
        inp = acts.detach().cpu().float().clone().requires_grad_()
        attr = LayerLRP(nn.Sequential(layer), layer).attribute(inp, target=pred.cpu(), attribute_to_layer_input=True)
        return attr.detach().to(acts.device)
    raise ValueError(f"neuron_perturbation: relevance backend {backend!r}; use one of {BACKENDS}")


def relevance(model: nn.Module, x: torch.Tensor, layer: str = "head", backend: str = "closed_form",
              epsilon: float = 0.1) -> torch.Tensor:
    """`relevance_from_acts` for images `x` (model and layer by name); the model is only read."""
    head = _linear(model, layer)
    device = next(model.parameters()).device
    return relevance_from_acts(head, head_inputs(model, head, x, device), backend, epsilon)


def occurrence_ranking(rel: torch.Tensor, k_a: int) -> tuple[np.ndarray, np.ndarray]:
    """Neuronal occurrence frequency: how often each neuron is among an image's k_a most relevant
    (signed, descending). Returns (neurons sorted by count, counts); ties go to the larger summed
    relevance of the kept entries, then to the lower index, so the ranking is deterministic."""
    rel = rel.detach().cpu().double()
    k = min(k_a, rel.shape[1])
    top = rel.topk(k, dim=1).indices
    counts = torch.zeros(rel.shape[1], dtype=torch.long).index_add_(
        0, top.flatten(), torch.ones(top.numel(), dtype=torch.long))
    mass = (rel * torch.zeros_like(rel).scatter_(1, top, 1.0)).sum(0).numpy()
    order = np.lexsort((np.arange(rel.shape[1]), np.round(-mass, 6), -counts.numpy()))
    return order, counts.numpy()
