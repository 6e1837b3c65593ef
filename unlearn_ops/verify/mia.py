"""Population membership-inference attacks on per-sample loss.

`simple_mia` is the NeurIPS'23 unlearning-challenge starting kit's attack: logistic regression on
the per-sample cross-entropy loss, forget samples (label 1) against an equal number of
non-members (label 0), scored by 10-split stratified shuffle cross-validation. 0.5 = the attacker
cannot tell forget samples from data the model never saw; higher = the forget set is still
recognisably "in" the model. `loss_auc` is the threshold-free version (ROC AUC of −loss).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from torch import nn

from unlearn_ops.data.splits import Part
from unlearn_ops.training import per_sample_loss


def balanced(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger array so both have the same length (a fair 50 % baseline)."""
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    return rng.permutation(a)[:n], rng.permutation(b)[:n]


def simple_mia_scores(member: np.ndarray, nonmember: np.ndarray, n_splits: int = 10, seed: int = 0) -> float:
    """Mean CV accuracy of a logistic regression separating member from non-member scores."""
    member, nonmember = balanced(np.asarray(member), np.asarray(nonmember), seed)
    if len(member) < 2:
        return float("nan")
    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.3, random_state=seed)
    return float(cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean())


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC of 'higher score = member'; 0.5 = indistinguishable."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return float("nan")
    y = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    return float(roc_auc_score(y, np.concatenate([member_scores, nonmember_scores])))


def simple_mia(model: nn.Module, forget: Part, nonmember: Part, seed: int = 0) -> dict[str, float]:
    """Loss-based MIA, forget vs non-member: CV accuracy (`mia_simple`) and AUC (`mia_loss_auc`)."""
    lf = per_sample_loss(model, forget).numpy()
    ln = per_sample_loss(model, nonmember).numpy()
    # log1p keeps the huge losses of forgotten samples from dominating the logistic fit
    return {"mia_simple": simple_mia_scores(np.log1p(lf), np.log1p(ln), seed=seed),
            "mia_loss_auc": auc(-lf, -ln)}


def matched_nonmembers(forget: Part, nonmember: Part) -> Part:
    """Non-members restricted to the forget set's classes, so class mix does not leak membership."""
    classes = torch.unique(forget.y).numpy()
    return nonmember.where(np.isin(nonmember.y.numpy(), classes))
