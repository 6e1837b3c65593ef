"""`neuron_perturbation`: zero-shot class unlearning by layer-wise relevance analysis and
neuronal path perturbation (LRA-NPP; Chang, Zhu, Xiong, Wu, Guan, Zhou, arXiv 2410.23693).

What it does: for each class to forget, take `n_a` images of that class that the model was never
trained on (the non-member pool; "zero-shot"), compute the LRP relevance of the neurons at the
input of the last Linear for the *predicted* class, keep each image's `k_a` most relevant neurons,
count how often each neuron is kept over the analysis set ("neuronal occurrence frequency") and
perturb the path of the `k_p` most frequent ones: their incoming row in the penultimate Linear and
the class's outgoing weights (MLP heads), or their columns of the last Linear (pooled-feature
heads such as ResNet). `mode` zero is the paper's method; gauss / laplace are its noise baselines.

Why: it needs no training data and no training (≈ 50 ms on a CPU for the paper's CNN), so a class
deletion costs nothing next to retraining. Where it is weak (docs/methods/neuron_perturbation.md):
on Fashion-MNIST the paper's edit costs the other classes 1–8 accuracy points at settings that
forget, and it suppresses the class's logit while the features keep the class, so a few
fine-tuning steps bring the class back. Our variant adds, still zero-shot:

* a stopping rule that picks k_p per class (the smallest k_p on a grid at which the class's
  non-member check images are no longer recognised), instead of one k_p for every class;
* `prune`: the perturbed neurons are removed from the class's path for good (incoming row and
  bias zeroed, so the ReLU is dead and no gradient can revive it) and their constant output is
  folded into the other classes' biases, so the other classes' logits are unchanged by the cut;
* a short repair step on non-member images only: the other classes' non-members keep their
  labels, the forgotten class's non-members are taught the class the original model ranks next
  (what a model that never saw the class predicts), which pushes the class's logit as far below
  as retraining does instead of just below the runner-up.

The paper's exact version is `scope=paper, mode=zero, prune=false, stop_accuracy=null,
repair_steps=0` (see `PAPER` below and params.yaml).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Collection, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import UnlearnResult, fresh_copy
from unlearn_ops.training import predict_logits
from unlearn_ops.utils import resolve_device


@dataclass(frozen=True)
class Config:
    # ---- the paper's analysis (Algorithm: relevance → occurrence frequency → top-k_p)
    n_a: int = 36                    # analysis images per forgotten class, drawn from the non-member pool
    k_a: int = 100                   # most relevant neurons kept per analysis image
    k_p: int = 150                   # neurons whose path is perturbed per class (the most frequent ones);
    #                                  with a stopping rule: the largest k_p it may choose
    layer: str = "head"              # the last nn.Linear; the analysis layer is its input
    penultimate: str = "fc1"         # the Linear feeding `layer` (MLP heads); "" = pooled-feature head
    relevance: str = "closed_form"   # closed_form (a_j·W[ĉ,j], exact ε-rule) | captum (LayerLRP)
    epsilon: float = 0.1             # ε of the LRP ε-rule (TorchLRP's value, used by the paper)
    # ---- the perturbation
    scope: str = "paper"             # paper: incoming row + class's outgoing weights (MLP) / columns (pooled);
    #                                  outgoing: only W_out[c, j]; columns: W_out[:, j] for every class
    mode: str = "zero"               # zero (the method) | gauss | laplace (the paper's noise baselines)
    noise_scale: float = 1.0         # std of gauss / scale of laplace noise added to the path's weights
    multi_class: str = "per_class"   # several classes: per_class (each its own neurons) | union (all share ∪P_c)
    # ---- our utility-preserving variant (all off = the paper)
    prune: bool = False              # zero the perturbed neurons' bias too (dead ReLU, cannot be revived by
    #                                  fine-tuning) and fold their constant output into the other classes' bias
    stop_accuracy: float | None = None  # stopping rule: per class, the smallest k_p on the grid at which the
    #                                  class's check images are recognised at most this often; None = fixed k_p
    k_p_step: int = 10               # grid step of the stopping rule (k_p_step, 2·k_p_step, … ≤ k_p)
    n_check: int = 100               # extra non-member images per class for the stopping rule (beside n_a)
    repair_steps: int = 0            # full-batch Adam steps of the non-member repair (0 = no repair)
    repair_n: int = 50               # non-member images per *other* class in the repair batch
    repair_lr: float = 1e-3          # Adam learning rate of the repair (it changes the last Linear only)
    # ---- bookkeeping
    seed: int = 0                    # analysis / check / repair sampling and noise


# The paper's exact settings for its MNIST CNN (official code, 2026): 36 / 50 / 80, zeroing.
PAPER = {"n_a": 36, "k_a": 50, "k_p": 80, "scope": "paper", "mode": "zero", "prune": False,
         "stop_accuracy": None, "repair_steps": 0}

SCOPES = ("paper", "outgoing", "columns")
MODES = ("zero", "gauss", "laplace")
BACKENDS = ("closed_form", "captum")


class ZeroShotViolation(ValueError):
    """An analysis image is in the model's training data: the method would not be zero-shot."""


class NotAClassDeletion(ValueError):
    """The forget set is not made of whole classes (item deletions need another method)."""


# ----------------------------------------------------------------------------- validation
def check_config(cfg: Config) -> None:
    for name, value, allowed in (("scope", cfg.scope, SCOPES), ("mode", cfg.mode, MODES),
                                 ("relevance", cfg.relevance, BACKENDS),
                                 ("multi_class", cfg.multi_class, ("per_class", "union"))):
        if value not in allowed:
            raise ValueError(f"neuron_perturbation: {name}={value!r}; use one of {allowed}")
    if min(cfg.n_a, cfg.k_a, cfg.k_p, cfg.k_p_step) < 1:
        raise ValueError("neuron_perturbation: n_a, k_a, k_p and k_p_step must be ≥ 1")
    if cfg.mode != "zero" and (cfg.prune or cfg.stop_accuracy is not None or cfg.repair_steps):
        raise ValueError("neuron_perturbation: prune, stop_accuracy and repair are defined for mode=zero only "
                         "(the noise modes are the paper's baselines)")


def forget_classes_of(splits: Splits) -> list[int]:
    """The classes to forget; raises NotAClassDeletion unless the forget set is whole classes."""
    classes = splits.forget_classes
    if not classes:
        raise NotAClassDeletion("neuron_perturbation: the forget set is empty")
    leftover = np.isin(splits.retain.y.numpy(), classes)
    if leftover.any():
        counts = {int(c): int((splits.retain.y.numpy()[leftover] == c).sum()) for c in classes}
        raise NotAClassDeletion(
            f"neuron_perturbation forgets whole classes only, but the retain set still holds samples of "
            f"the forget classes {counts}: this is an item deletion (use finetune or retrain)")
    return classes


def assert_zero_shot(analysis_ids: Iterable[str], training_ids: Collection[str]) -> None:
    """No analysis image may be one the model was trained on."""
    leaked = sorted(set(analysis_ids) & set(training_ids))
    if leaked:
        raise ZeroShotViolation(f"neuron_perturbation is zero-shot, but {len(leaked)} analysis image(s) are in "
                                f"the model's training data, e.g. {leaked[:3]}")


# ----------------------------------------------------------------------------- the model's head
def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"neuron_perturbation: the model has no module {name!r}") from err


def head_of(model: nn.Module, cfg: Config) -> tuple[nn.Linear, nn.Linear | None]:
    """(last Linear, penultimate Linear or None for pooled-feature heads)."""
    head = _module(model, cfg.layer)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"neuron_perturbation: {cfg.layer!r} must be an nn.Linear, got {type(head).__name__}")
    if not cfg.penultimate:
        return head, None
    pen = _module(model, cfg.penultimate)
    if not isinstance(pen, nn.Linear) or pen.out_features != head.in_features:
        raise ValueError(f"neuron_perturbation: {cfg.penultimate!r} must be the nn.Linear feeding {cfg.layer!r}")
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
    head = _module(model, layer)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"neuron_perturbation: {layer!r} must be an nn.Linear, got {type(head).__name__}")
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


# ----------------------------------------------------------------------------- the path edit
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


# ----------------------------------------------------------------------------- data
def nonmember_images(splits: Splits, classes: list[int], cfg: Config
                     ) -> tuple[dict[int, Part], dict[int, Part], Part]:
    """Per forgotten class: n_a analysis and up to n_check *other* check images; plus repair_n
    images of every other class (repair only). All from the non-member pool."""
    analysis, check = {}, {}
    n_check = cfg.n_check if cfg.stop_accuracy is not None or cfg.repair_steps else 0
    for c in classes:
        pool = splits.nonmember.where(splits.nonmember.y == c)
        if len(pool) == 0:
            raise ValueError(f"neuron_perturbation: the non-member pool has no image of class {c}")
        order = np.random.default_rng(cfg.seed + 1000 * c).permutation(len(pool))
        analysis[c] = pool.subset(np.sort(order[:cfg.n_a]))
        check[c] = pool.subset(np.sort(order[cfg.n_a:cfg.n_a + n_check]))
    others = splits.nonmember.where(~np.isin(splits.nonmember.y.numpy(), classes))
    if cfg.repair_steps:
        parts = [others.where(others.y == k).sample(cfg.repair_n, cfg.seed + k) for k in sorted(set(others.y.tolist()))]
        repair_part = parts[0]
        for part in parts[1:]:
            repair_part = repair_part.concat(part)
    else:
        repair_part = others.subset([])
    return analysis, check, repair_part


def _concat(parts: list[Part]) -> Part:
    out = parts[0]
    for part in parts[1:]:
        out = out.concat(part)
    return out


# ----------------------------------------------------------------------------- variant pieces
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


def repair_head(head: nn.Linear, acts: torch.Tensor, targets: torch.Tensor, edit: PathEdit, cfg: Config) -> list[str]:
    """Full-batch Adam on the last Linear only, on non-member head inputs, towards the soft
    `targets`; the cut stays cut."""
    mask = edit.out_mask.to(head.weight.device)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.repair_lr)
    logs = []
    for step in range(cfg.repair_steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(acts), targets)
        loss.backward()
        opt.step()
        with torch.no_grad():
            head.weight[mask] = 0.0
        if step in (0, cfg.repair_steps - 1):
            logs.append(f"repair step {step + 1}/{cfg.repair_steps}: loss {loss.item():.4f}")
    return logs


# ----------------------------------------------------------------------------- the method
def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto",
            training_ids: Collection[str] | None = None) -> UnlearnResult:
    """Forget the forget set's classes. `training_ids` (optional): the model's training manifest,
    checked against every non-member image used, besides the splits' own retain ∪ forget IDs."""
    check_config(cfg)
    classes = forget_classes_of(splits)
    dev = resolve_device(device)
    analysis, check, repair_part = nonmember_images(splits, classes, cfg)
    used = _concat(list(analysis.values()) + list(check.values()) + [repair_part])
    assert_zero_shot(used.ids, set(splits.retain.ids) | set(splits.forget.ids) | set(training_ids or ()))

    new = fresh_copy(model).to(dev).eval()
    head, pen = head_of(new, cfg)
    # One forward pass over every non-member image used; everything after works on the head's
    # input (the edit never changes what feeds the penultimate Linear).
    acts = head_inputs(new, head, used.x, dev)
    offsets = np.cumsum([0] + [len(analysis[c]) for c in classes] + [len(check[c]) for c in classes])
    a_acts = {c: acts[offsets[i]:offsets[i + 1]] for i, c in enumerate(classes)}
    c_acts = {c: acts[offsets[len(classes) + i]:offsets[len(classes) + i + 1]] for i, c in enumerate(classes)}
    r_acts = acts[offsets[-1]:]

    chosen: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    pen_b = pen.bias.detach() if pen is not None and cfg.scope == "paper" else None
    for c in classes:
        order, counts[c] = occurrence_ranking(relevance_from_acts(head, a_acts[c], cfg.relevance, cfg.epsilon), cfg.k_a)
        k = cfg.k_p if cfg.stop_accuracy is None else stop_k_p(
            cfg, c, order, torch.cat([a_acts[c], c_acts[c]]), head, pen_b, splits.num_classes)
        chosen[c] = order[:k]
    if cfg.multi_class == "union" and len(classes) > 1:
        union = np.unique(np.concatenate(list(chosen.values())))
        chosen = {c: union for c in classes}

    has_pen = pen is not None and cfg.scope == "paper"
    edit = path_masks(cfg.scope, chosen, splits.num_classes, head.in_features, has_pen, cfg.prune)
    repair_inputs = torch.cat([a_acts[c] for c in classes] + [c_acts[c] for c in classes] + [r_acts])
    with torch.no_grad():
        teacher = head(repair_inputs) if cfg.repair_steps else None      # the original head, before the edit
    edit_tensors(edit, cfg.mode, cfg.noise_scale, torch.Generator().manual_seed(cfg.seed),
                 head.weight.data, head.bias.data if head.bias is not None else None,
                 pen.weight.data if has_pen else None, pen.bias.data if has_pen else None)
    logs = [f"class {c}: perturbed the path of {len(n)} neurons ({cfg.scope}, {cfg.mode})" for c, n in chosen.items()]

    if cfg.repair_steps:
        # Distil the original head restricted to the retained classes (the forgotten ones get
        # probability 0) on non-member images only: the other classes keep their behaviour and the
        # forgotten classes' images go to what the original model ranks next.
        teacher[:, classes] = -torch.inf
        inputs = edited_acts(repair_inputs, edit, pen.bias.detach() if has_pen else None)
        with torch.enable_grad():
            logs += repair_head(head, inputs, torch.softmax(teacher, 1), edit, cfg)
    new.eval()
    details = {
        "classes": classes,
        "k_p": {int(c): int(len(n)) for c, n in chosen.items()},
        "neurons": {int(c): [int(j) for j in n] for c, n in chosen.items()},
        "occurrence_counts": {int(c): [int(counts[c][j]) for j in chosen[c]] for c in classes},
        "analysis_ids": {int(c): list(p.ids) for c, p in analysis.items()},
        "nonmember_images_used": len(used),
        "edited_weights": int(edit.out_mask.sum()) + (int(edit.in_rows.sum()) * pen.in_features if has_pen else 0),
    }
    return UnlearnResult(new, "neuron_perturbation", details=details, log=logs)
