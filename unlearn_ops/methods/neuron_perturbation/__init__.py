"""`neuron_perturbation`: zero-shot class unlearning by layer-wise relevance analysis and
neuronal path perturbation (LRA-NPP; Chang, Zhu, Xiong, Wu, Guan, Zhou, arXiv 2410.23693).

For each class to forget: LRP relevance of the neurons at the input of the last Linear on `n_a`
non-member images of the class (`relevance`), the `k_p` neurons most often among an image's `k_a`
most relevant, and their path cut (`path`): incoming row and the class's outgoing weights (MLP
heads) or their columns (pooled-feature heads). No training data, no training. Our variant
(stopping rule per class, pruning, a head repair on non-members; `_variant`) is off by default;
`PAPER` is the paper's setting. Why, and what each measured: docs/methods/neuron_perturbation.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import NotApplicable, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.methods.neuron_perturbation._variant import one_cpu_thread, repair, stop_k_p
from unlearn_ops.methods.neuron_perturbation.path import PathEdit, edit_tensors, path_masks
from unlearn_ops.methods.neuron_perturbation.relevance import (
    BACKENDS,
    head_inputs,
    head_of,
    occurrence_ranking,
    relevance,
    relevance_from_acts,
)
from unlearn_ops.methods.neuron_perturbation.rows import RoleActs, nonmember_rows
from unlearn_ops.utils import resolve_device

EXACT = False
REQUEST_KINDS: tuple[str, ...] = ("class",)  # whole classes only: an item deletion is NotAClassDeletion

SCOPES = ("paper", "outgoing", "columns")
MODES = ("zero", "gauss", "laplace")


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

    def __post_init__(self) -> None:
        check_choices(self, {"scope": SCOPES, "mode": MODES, "relevance": BACKENDS,
                             "multi_class": ("per_class", "union")})
        check_positive(self, "n_a", "k_a", "k_p", "k_p_step")
        if self.mode != "zero" and (self.prune or self.stop_accuracy is not None or self.repair_steps):
            raise ValueError("neuron_perturbation: prune, stop_accuracy and repair are defined for mode=zero only "
                             "(the noise modes are the paper's baselines)")


# The paper's exact settings for its MNIST CNN (official code, 2026): 36 / 50 / 80, zeroing.
PAPER = {"n_a": 36, "k_a": 50, "k_p": 80, "scope": "paper", "mode": "zero", "prune": False,
         "stop_accuracy": None, "repair_steps": 0}


class ZeroShotViolation(ValueError):
    """An analysis image is in the model's training data: the method would not be zero-shot."""


class NotAClassDeletion(NotApplicable, ValueError):
    """The forget set is not made of whole classes (item deletions need another method)."""


def forget_classes_of(splits: Splits) -> list[int]:
    """The classes to forget (`Splits.removed_classes`); NotAClassDeletion unless the forget set is whole classes."""
    if len(splits.forget) == 0:
        raise NotAClassDeletion("neuron_perturbation: the forget set is empty")
    if not splits.is_class_deletion:
        classes = splits.forget_classes
        retained = splits.retain.y[torch.isin(splits.retain.y, torch.tensor(classes))]
        counts = {c: int((retained == c).sum()) for c in classes}
        raise NotAClassDeletion(
            f"neuron_perturbation forgets whole classes only, but the retain set still holds samples of "
            f"the forget classes {counts}: this is an item deletion (use finetune or retrain)")
    return splits.removed_classes


def assert_zero_shot(analysis_ids: Iterable[str], training_ids: Collection[str]) -> None:
    """No analysis image may be one the model was trained on."""
    leaked = sorted(set(analysis_ids) & set(training_ids))
    if leaked:
        raise ZeroShotViolation(f"neuron_perturbation is zero-shot, but {len(leaked)} analysis image(s) are in "
                                f"the model's training data, e.g. {leaked[:3]}")



def choose_neurons(head: nn.Linear, acts: RoleActs, classes: list[int], cfg: Config, pen_b: torch.Tensor | None,
                   num_classes: int, device: torch.device) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per class, the neurons whose path is cut (the most frequent k_p, or the stopping rule's k_p)
    and every neuron's occurrence count."""
    chosen: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for c in classes:
        order, counts[c] = occurrence_ranking(relevance_from_acts(head, acts.analysis[c], cfg.relevance, cfg.epsilon),
                                              cfg.k_a)
        with one_cpu_thread(device):
            k = cfg.k_p if cfg.stop_accuracy is None else stop_k_p(
                cfg, c, order, torch.cat([acts.analysis[c], acts.check[c]]), head, pen_b, num_classes)
        chosen[c] = order[:k]
    if cfg.multi_class == "union" and len(classes) > 1:
        union = np.unique(np.concatenate(list(chosen.values())))
        chosen = {c: union for c in classes}
    return chosen, counts


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto",
            training_ids: Collection[str] | None = None) -> UnlearnResult:
    """Forget the forget set's classes. `training_ids` (optional): the model's training manifest,
    checked against every non-member image used, besides the splits' own retain ∪ forget IDs."""
    classes = forget_classes_of(splits)
    dev = resolve_device(device)
    rows = nonmember_rows(splits, classes, cfg)
    used = rows.all
    assert_zero_shot([splits.nonmember.ids[i] for i in used],
                     set(splits.retain.ids) | set(splits.forget.ids) | set(training_ids or ()))

    new = fresh_copy(model).to(dev).eval()
    head, pen = head_of(new, cfg)
    # One forward pass over every non-member image used; everything after works on the head's
    # input (the edit never changes what feeds the penultimate Linear).
    acts = RoleActs.split(head_inputs(new, head, splits.nonmember.x[torch.as_tensor(used, dtype=torch.long)], dev), rows)
    has_pen = pen is not None and cfg.scope == "paper"
    chosen, counts = choose_neurons(head, acts, classes, cfg, pen.bias.detach() if has_pen else None,
                                    splits.num_classes, dev)

    edit = path_masks(cfg.scope, chosen, splits.num_classes, head.in_features, has_pen, cfg.prune)
    with torch.no_grad():
        teacher = head(acts.all) if cfg.repair_steps else None      # the original head, before the edit
    edit_tensors(edit, cfg.mode, cfg.noise_scale, torch.Generator().manual_seed(cfg.seed),
                 head.weight.data, head.bias.data if head.bias is not None else None,
                 pen.weight.data if has_pen else None, pen.bias.data if has_pen else None)
    logs = [f"class {c}: perturbed the path of {len(n)} neurons ({cfg.scope}, {cfg.mode})" for c, n in chosen.items()]
    repaired: dict[str, object] = {}
    if cfg.repair_steps:
        repaired, line = repair(head, acts, teacher, edit, cfg, classes, splits.num_classes,
                                pen.bias.detach() if has_pen else None, dev)
        logs.append(line)
    new.eval()
    return UnlearnResult(new, "neuron_perturbation", log=logs, details=_details(
        classes, chosen, counts, rows.analysis, splits, len(used), repaired, edit, pen.in_features if has_pen else 0))


def _details(classes: list[int], chosen: dict[int, np.ndarray], counts: dict[int, np.ndarray],
             analysis: dict[int, np.ndarray], splits: Splits, n_used: int, repaired: dict[str, object],
             edit: PathEdit, pen_in: int) -> dict[str, object]:
    """What the edit did, as plain values (the neurons, their counts, the non-member IDs analysed)."""
    return {
        "classes": classes,
        "k_p": {int(c): int(len(n)) for c, n in chosen.items()},
        "neurons": {int(c): [int(j) for j in n] for c, n in chosen.items()},
        "occurrence_counts": {int(c): [int(counts[c][j]) for j in chosen[c]] for c in classes},
        "analysis_ids": {int(c): [splits.nonmember.ids[i] for i in r] for c, r in analysis.items()},
        "nonmember_images_used": n_used,
        "repair": repaired,
        "edited_weights": int(edit.out_mask.sum()) + int(edit.in_rows.sum()) * pen_in,
    }


__all__ = ["EXACT", "PAPER", "REQUEST_KINDS", "Config", "NotAClassDeletion", "ZeroShotViolation", "relevance",
           "unlearn"]
