"""Concept inference: the post-hoc concept bottleneck (PCBM), IntegratedGradients importance, and
the paper's donor rule (which retained class a forgotten class is pushed onto)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import NotApplicable

if TYPE_CHECKING:
    from unlearn_ops.methods.concept_poisoning import Config


def analysis_part(splits: Splits, per_class: int, seed: int) -> Part:
    """Up to `per_class` samples per class from non-member ∪ retain: never the forget set.

    Non-members come first, so a forgotten class (absent from retain) is still represented."""
    return splits.nonmember.concat(splits.retain).per_class(per_class, seed)


def fit_pcbm(acts: np.ndarray, y: np.ndarray, num_classes: int, cfg: Config) -> nn.Linear:
    """Elastic-net logistic regression on concept activations (paper settings), as a torch Linear.

    sklearn stores a binary problem as one row w (logit of class 1); the equivalent two-row
    softmax head is [-w/2, +w/2] (softmax of ±z/2 = sigmoid z), so every class gets a row.
    Classes missing from the analysis data get a zero row."""
    from sklearn.linear_model import SGDClassifier

    clf = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=cfg.pcbm_alpha, l1_ratio=cfg.pcbm_l1_ratio,
                        max_iter=cfg.pcbm_max_iter, random_state=cfg.seed).fit(acts, y)
    coef, bias = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:
        coef, bias = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    weight = np.zeros((num_classes, acts.shape[1]), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    weight[clf.classes_], b[clf.classes_] = coef, bias
    head = nn.Linear(acts.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(b))
    return head.eval()


def ig_attributions(head: nn.Linear, acts: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """captum IntegratedGradients of `head` w.r.t. concept activations, zero baseline.

    For a linear head this is exactly W[target] ⊙ activation (the test checks it)."""
    from captum.attr import IntegratedGradients

    x = acts.float().clone().requires_grad_(True)
    # captum differentiates every (sample, step) output at once; its cost grows faster than
    # linearly with that count, so chunks of 256 samples keep it to seconds for thousands
    return IntegratedGradients(head).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                                               internal_batch_size=256 * steps).detach()


def concept_importance(head: nn.Linear, acts: torch.Tensor, y: torch.Tensor, num_classes: int,
                       steps: int) -> np.ndarray:
    """C × K: the mean IG attribution toward class c over the analysis samples of class c."""
    attr = ig_attributions(head, acts, y, steps)
    out = np.zeros((num_classes, acts.shape[1]))
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            out[c] = attr[mask].mean(0).numpy()
    return out


def top_concepts(importance: np.ndarray, m: int) -> np.ndarray:
    """C × m concept indices, most important first (ties broken by index: deterministic)."""
    return np.argsort(-importance, axis=1, kind="stable")[:, :m]


@dataclass(frozen=True)
class Donor:
    target: int
    donor: int
    target_concept: int
    donor_concept: int
    rule: str  # "confusion" | "shared"


def choose_donor(ranking: np.ndarray, weight: np.ndarray, target: int, excluded: set[int]) -> Donor:
    """The paper's rule. `ranking` C × M (top concepts per class), `weight` C × K (PCBM).

    Confusion: the first of the target's top-M concepts that is another (allowed) class's top-1
    concept names that class as donor. Shared (fallback): the allowed class with the largest
    weight on the target's top-1 concept; the donor concept is that same concept."""
    allowed = [d for d in range(len(ranking)) if d != target and d not in excluded]
    if not allowed:
        raise NotApplicable(f"concept_poisoning: no donor class for class {target}: every other class is being "
                            "forgotten")
    t_top = int(ranking[target][0])
    for k in ranking[target]:
        for d in allowed:
            if int(ranking[d][0]) == int(k):
                return Donor(target, d, t_top, int(k), "confusion")
    d = max(allowed, key=lambda c: (weight[c, t_top], -c))
    return Donor(target, int(d), t_top, t_top, "shared")


@dataclass
class ConceptReport:
    """What concept inference found (plain values, safe to log)."""

    names: list[str]
    importance: np.ndarray      # C × K class-mean IG
    weight: np.ndarray          # C × K PCBM weights
    ranking: np.ndarray         # C × M by the configured importance
    donors: dict[int, Donor]
    pcbm_accuracy: float

    def as_details(self, classes: list[int]) -> dict[str, Any]:
        m = self.ranking.shape[1]
        by_ig = top_concepts(self.importance, m)
        by_w = top_concepts(self.weight, m)
        agreement = float(np.mean([len(set(by_ig[c]) & set(by_w[c])) / m for c in classes])) if classes else float("nan")
        per_class = {str(c): {"top_concepts": [self.names[k] for k in self.ranking[c]],
                              "importance": [round(float(self.importance[c, k]), 6) for k in self.ranking[c]],
                              "top_by_ig": [self.names[k] for k in by_ig[c]],
                              "top_by_weight": [self.names[k] for k in by_w[c]]}
                     for c in range(len(self.ranking))}
        donors = {str(t): {"donor": d.donor, "target_concept": self.names[d.target_concept],
                           "donor_concept": self.names[d.donor_concept], "rule": d.rule}
                  for t, d in self.donors.items()}
        return {"concepts": list(self.names), "classes": per_class, "donors": donors,
                "ig_weight_top_agreement": agreement, "pcbm_accuracy": self.pcbm_accuracy}


def infer_concepts(acts: torch.Tensor, y: torch.Tensor, names: list[str], num_classes: int,
                   targets: list[int], excluded: set[int], cfg: Config) -> ConceptReport:
    """PCBM on the activations, IG importance, ranking and a donor per target class."""
    head = fit_pcbm(acts.numpy(), y.numpy(), num_classes, cfg)
    with torch.no_grad():
        pcbm_acc = float((head(acts.float()).argmax(1) == y).float().mean())
    importance = concept_importance(head, acts, y, num_classes, cfg.pcbm_ig_steps)
    weight = head.weight.detach().numpy().astype(float)
    m = min(cfg.top_concepts, len(names))
    ranking = top_concepts(importance if cfg.importance == "ig" else weight, m)
    donors = {t: choose_donor(ranking, weight, t, excluded) for t in targets}
    return ConceptReport(names, importance, weight, ranking, donors, pcbm_acc)

