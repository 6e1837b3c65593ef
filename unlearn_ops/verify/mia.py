"""Population membership-inference attacks (one attacker for all examples).

Three attacks, each with one definition (docs/verification.md has them side by side):

- `simple_mia`: per-sample loss, logistic regression, forget vs non-members (the NeurIPS'23 kit).
- `mia_efficacy`: SalUn/Sparse "MIA-Efficacy", *confidence* variant (SVC on p(y|x)).
- `forgetting_rate`: the seed papers' SVM-transfer attack Fr (LinearSVC fitted on the original model).

Per-example attacks (LiRA, U-LiRA) live in `unlearn_ops.verify.lira`.

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
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.training import per_sample_loss, predict_logits


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


def softmax(model: nn.Module, part: Part) -> np.ndarray:
    """Softmax output of `model` on `part`, shape (n, classes), float64 on CPU."""
    return torch.softmax(predict_logits(model, part.x).double(), dim=1).numpy()


def true_label_confidence(model: nn.Module, part: Part) -> np.ndarray:
    """p_model(y | x) for each sample's own label: the feature of the confidence-variant MIA."""
    probs = softmax(model, part)
    return probs[np.arange(len(part)), part.y.numpy()]


def svc_confidence_attack(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray) -> float:
    """Fit SVC(RBF, C=3, gamma="auto") on member (1) vs non-member (0) features; the share of
    `target` it predicts as non-member. Features are 1-D confidences (any shape (n,) or (n, d))."""
    if len(target) == 0 or len(member) == 0 or len(nonmember) == 0:
        return float("nan")
    x = np.concatenate([member, nonmember]).reshape(len(member) + len(nonmember), -1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return float(1.0 - clf.predict(np.asarray(target).reshape(len(target), -1)).mean())


def mia_efficacy(model: nn.Module, splits: Splits, seed: int = 0) -> float:
    """MIA-Efficacy of SalUn / Sparse (`SVC_MIA_forget_efficacy`), **confidence variant**.

    Feature φ(x) = softmax probability of the true label. An SVC (RBF, C=3, gamma="auto") is
    trained with label 1 on |test| samples of the retain set and label 0 on the test set, then
    applied to the forget set. Returns TN/|forget| in 0..1: the share of forget samples the
    attacker calls non-members. Higher = more forgotten; the target is the retrained model's
    value, not 1.0 (over-forgetting is a failure too). The SalUn code draws the first |test|
    retain samples; we draw a seeded random subset (the retain set has no meaningful order here).
    When the retain set is smaller than the test set, both sides are cut to the same size.
    """
    n = min(len(splits.retain), len(splits.test))
    if n == 0 or len(splits.forget) == 0:
        return float("nan")
    member = true_label_confidence(model, splits.retain.sample(n, seed))
    nonmember = true_label_confidence(model, splits.test.sample(n, seed + 1))
    return svc_confidence_attack(member, nonmember, true_label_confidence(model, splits.forget))


def forgetting_rate(original: nn.Module, model: nn.Module, forget_member: Part, forget_nonmember: Part,
                    seed: int = 0, max_n: int = 1500) -> float:
    """The seed papers' SVM-transfer attack Fr (LRA-NPP, concept-poisoning), in 0..1.

    1. Attacker: `StandardScaler` + `LinearSVC` on the *original* model's full softmax vectors,
       members = up to `max_n` forget samples (label 1) vs as many non-members of the same
       classes (label 0; balanced to the smaller side).
    2. Target: `model`'s softmax on up to 2000 forget samples.
    3. Fr = share judged non-member. Higher = more forgotten; the retrained model is the reference.
       For a class deletion the target model predicts other classes for those images, outside
       what the attacker was fitted on: measured on Fashion-MNIST, the retrained model scores
       anywhere in 0.03–1.0 depending on the class and seed (docs/benchmarks/concept_poisoning.md),
       so read Fr next to the retrained model's, never against a fixed threshold.
    """
    n = min(len(forget_member), len(forget_nonmember), max_n)
    if n < 2:
        return float("nan")
    members = softmax(original, forget_member.sample(n, seed))
    nonmembers = softmax(original, forget_nonmember.sample(n, seed + 1))
    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    attacker = make_pipeline(StandardScaler(), LinearSVC(random_state=seed, max_iter=10_000)).fit(x, y)
    target = softmax(model, forget_member.sample(2000, seed + 2))
    return float((attacker.predict(target) == 0).mean())
