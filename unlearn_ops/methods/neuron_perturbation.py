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
* a short repair of the last Linear on non-member images only: it distils the original head
  restricted to the retained classes (the forgotten classes get probability 0), so the other
  classes get back what the cut cost them and the forgotten class's images go to what the
  original model ranks next. The class's logit then sinks well below the runner-up instead of
  just below it, which is what a few fine-tuning steps (the relearning attack) can undo.

The paper's exact version is `scope=paper, mode=zero, prune=false, stop_accuracy=null,
repair_steps=0` (see `PAPER` below and params.yaml).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import NotApplicable, UnlearnResult, fresh_copy
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
    repair_margin: bool = True       # stop the repair once the class's median logit margin on its own non-member
    #                                  images is as low as the original gives it on other classes' images
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


class NotAClassDeletion(NotApplicable, ValueError):
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
def nonmember_rows(splits: Splits, classes: list[int], cfg: Config
                   ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], np.ndarray]:
    """Rows of the non-member pool the method uses: per forgotten class n_a analysis and up to
    n_check *other* check images, plus repair_n images of every other class (repair only).
    Rows are chosen first and the images copied once (the pool can hold thousands of images)."""
    y = splits.nonmember.y.numpy()
    analysis, check = {}, {}
    n_check = cfg.n_check if cfg.stop_accuracy is not None or cfg.repair_steps else 0
    for c in classes:
        rows = np.flatnonzero(y == c)
        if len(rows) == 0:
            raise ValueError(f"neuron_perturbation: the non-member pool has no image of class {c}")
        order = np.random.default_rng(cfg.seed + 1000 * c).permutation(len(rows))
        analysis[c] = np.sort(rows[order[:cfg.n_a]])
        check[c] = np.sort(rows[order[cfg.n_a:cfg.n_a + n_check]])
    repair_rows = []
    if cfg.repair_steps:
        for k in sorted(set(y.tolist()) - set(classes)):
            rows = np.flatnonzero(y == k)
            repair_rows.append(np.sort(rows[np.random.default_rng(cfg.seed + k).permutation(len(rows))[:cfg.repair_n]]))
    return analysis, check, np.concatenate(repair_rows) if repair_rows else np.zeros(0, dtype=np.int64)


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


# ----------------------------------------------------------------------------- the method
@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """The stopping rule and the repair work on small (n × d) matrices. On a busy CPU, torch's
    intra-op threads only add synchronisation there (measured: 300 repair steps took 83 s with 2
    threads and 14 s with 1 on the shared 2-core machine), so run them on one thread."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto",
            training_ids: Collection[str] | None = None) -> UnlearnResult:
    """Forget the forget set's classes. `training_ids` (optional): the model's training manifest,
    checked against every non-member image used, besides the splits' own retain ∪ forget IDs."""
    check_config(cfg)
    classes = forget_classes_of(splits)
    dev = resolve_device(device)
    analysis, check, repair_rows = nonmember_rows(splits, classes, cfg)
    rows = np.concatenate([analysis[c] for c in classes] + [check[c] for c in classes] + [repair_rows])
    used_ids = [splits.nonmember.ids[i] for i in rows]
    assert_zero_shot(used_ids, set(splits.retain.ids) | set(splits.forget.ids) | set(training_ids or ()))

    new = fresh_copy(model).to(dev).eval()
    head, pen = head_of(new, cfg)
    # One forward pass over every non-member image used; everything after works on the head's
    # input (the edit never changes what feeds the penultimate Linear).
    acts = head_inputs(new, head, splits.nonmember.x[torch.as_tensor(rows, dtype=torch.long)], dev)
    offsets = np.cumsum([0] + [len(analysis[c]) for c in classes] + [len(check[c]) for c in classes])
    a_acts = {c: acts[offsets[i]:offsets[i + 1]] for i, c in enumerate(classes)}
    c_acts = {c: acts[offsets[len(classes) + i]:offsets[len(classes) + i + 1]] for i, c in enumerate(classes)}
    r_acts = acts[offsets[-1]:]

    chosen: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    pen_b = pen.bias.detach() if pen is not None and cfg.scope == "paper" else None
    for c in classes:
        order, counts[c] = occurrence_ranking(relevance_from_acts(head, a_acts[c], cfg.relevance, cfg.epsilon), cfg.k_a)
        with _one_cpu_thread(dev):
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

    repair: dict[str, object] = {}
    if cfg.repair_steps:
        # Distil the original head restricted to the retained classes (the forgotten ones get
        # probability 0) on non-member images only: the other classes keep their behaviour and the
        # forgotten classes' images go to what the original model ranks next.
        retained = [k for k in range(splits.num_classes) if k not in classes]
        n_own = int(offsets[-1])
        own = {c: torch.cat([torch.arange(offsets[i], offsets[i + 1]),
                             torch.arange(offsets[len(classes) + i], offsets[len(classes) + i + 1])])
               for i, c in enumerate(classes)}
        # The goal: a class the model never learned sits, on its own images, as far below the top
        # as the original model puts it on *other* classes' images (median margin).
        foreign = teacher[n_own:]
        goal = {c: float(class_margin(foreign, c, retained).median()) if len(foreign) else -float("inf")
                for c in classes}
        inputs = edited_acts(repair_inputs, edit, pen.bias.detach() if has_pen else None)
        with torch.enable_grad(), _one_cpu_thread(dev):
            repair = repair_head(head, inputs, teacher, edit, cfg, own, goal, retained)
        logs.append(f"repair: distillation loss {repair['distil_loss']:.4f}, {repair['steps']} forgetting steps, margins "
                    + ", ".join(f"{c}: {repair['margin'][c]:.2f} (goal {goal[c]:.2f})" for c in classes))
    new.eval()
    details = {
        "classes": classes,
        "k_p": {int(c): int(len(n)) for c, n in chosen.items()},
        "neurons": {int(c): [int(j) for j in n] for c, n in chosen.items()},
        "occurrence_counts": {int(c): [int(counts[c][j]) for j in chosen[c]] for c in classes},
        "analysis_ids": {int(c): [splits.nonmember.ids[i] for i in r] for c, r in analysis.items()},
        "nonmember_images_used": len(rows),
        "repair": repair,
        "edited_weights": int(edit.out_mask.sum()) + (int(edit.in_rows.sum()) * pen.in_features if has_pen else 0),
    }
    return UnlearnResult(new, "neuron_perturbation", details=details, log=logs)
