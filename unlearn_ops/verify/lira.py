"""Per-example likelihood-ratio membership attacks: LiRA (Carlini et al., S&P 2022) and U-LiRA
(Hayes et al., "Inexact unlearning needs more careful evaluations", SaTML 2025).

Population attacks (`unlearn_ops.verify.mia`) fit one attacker for all examples; these fit one
per example, from K shadow models, and are much stronger. The inputs are plain arrays, so the
attacks are testable on synthetic numbers and independent of how the shadows were trained
(`unlearn_ops.verify.shadows` trains them; `tasks/shadow.py` runs that on a Dask cluster).

Target models are held out from the shadows. We do not score each shadow against the other
K − 1 ("leave one out"): with the balanced design (each example IN exactly K/2 shadows) the
remaining shadows hold K/2 − 1 IN and K/2 OUT copies of a member, and for K = 4 that imbalance
alone pushes the AUC below 0.5 on a model that memorizes nothing (measured: 0.43).

Shapes: `shadow_conf` is (K, n): the logit-scaled confidence φ of shadow k on example i;
`shadow_in` (K, n) bool says whether example i was IN shadow k (for U-LiRA: whether shadow k
*unlearned* example i, as opposed to never having seen it). The target side is (T, n) or (n,).

Every attack reports ROC AUC and the TPR at 1 % and 0.1 % FPR (sklearn `roc_curve`; the TPR
at a FPR is the best TPR whose FPR does not exceed it). With m negatives a FPR below 1/m means
"no false positive at all", so 0.1 % FPR needs ≥ 1000 negatives to be more than that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

EPS = 1e-8


def logit_scaled_confidence(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """φ = log(p_y / (1 − p_y)), computed stably from logits as z_y − logsumexp_{y'≠y} z_{y'}
    (= log p_y − log Σ_{y'≠y} p_{y'}; no softmax, so p_y ≈ 1 does not round to +inf)."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    rows = torch.arange(len(y))
    true = z[rows, y]
    others = z.clone()
    others[rows, y] = -torch.inf
    return (true - torch.logsumexp(others, dim=1)).numpy()


@dataclass(frozen=True)
class AttackResult:
    """Scores (higher = 'member' / 'unlearned') and the ground truth they are judged against."""

    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    accuracy: float                       # balanced accuracy of the rule "score > threshold"
    scores: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_auc": self.auc, f"{prefix}_tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
                f"{prefix}_tpr_at_01pct_fpr": self.tpr_at_01pct_fpr, f"{prefix}_accuracy": self.accuracy}


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def summarize(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.0) -> AttackResult:
    """AUC, TPR at 1 % / 0.1 % FPR and balanced accuracy at `threshold` of finite scores."""
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    if labels.all() or not labels.any():
        nan = float("nan")
        return AttackResult(nan, nan, nan, nan, scores, labels)
    pred = scores > threshold
    balanced_acc = 0.5 * (pred[labels].mean() + (~pred[~labels]).mean())
    return AttackResult(float(roc_auc_score(labels, scores)), tpr_at_fpr(labels, scores, 0.01),
                        tpr_at_fpr(labels, scores, 0.001), float(balanced_acc), scores, labels)


def _per_example_gaussian(conf: np.ndarray, mask: np.ndarray, fix_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std of `conf` over the shadows where `mask` holds.

    With few shadows (K = 4 leaves about two per side) per-example variances are noise, so
    `fix_variance` uses one global std per side, as Carlini et al. recommend for small K.
    An example with no shadow on a side gets NaN (its score is dropped, never guessed). NaN
    confidences are ignored (U-LiRA marks shadows that are neither side for an example so).
    """
    mask = mask & np.isfinite(conf)
    count = mask.sum(0)
    mu = np.where(mask, conf, 0.0).sum(0) / np.maximum(count, 1)
    mu = np.where(count > 0, mu, np.nan)
    sq = np.where(mask, (conf - mu) ** 2, 0.0)
    if fix_variance:
        usable = count > 1  # a lone shadow has no spread to contribute
        pooled = sq[:, usable].sum() / max(int((count[usable] - 1).sum()), 1)
        sd = np.full(conf.shape[1], np.sqrt(pooled) if usable.any() else np.nan)
    else:
        sd = np.where(count > 1, np.sqrt(sq.sum(0) / np.maximum(count - 1, 1)), np.nan)
    return mu, sd + EPS


def _as_targets(target_conf: np.ndarray, target_label: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    conf = np.atleast_2d(np.asarray(target_conf, dtype=np.float64))
    label = np.atleast_2d(np.asarray(target_label, dtype=bool))
    if conf.shape != label.shape or conf.shape[1] != n:
        raise ValueError(f"target shapes {conf.shape} / {label.shape} do not match {n} examples")
    return conf, label


def lira_scores(target_conf: np.ndarray, shadow_conf: np.ndarray, shadow_in: np.ndarray, *,
                online: bool = True, fix_variance: bool = True) -> np.ndarray:
    """Per-example LiRA scores of `target_conf` ((T, n) or (n,)), higher = member.

    online:  Λ = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)
    offline: −log(1 − Φ((φ − μ_out)/σ_out)), the one-sided test against the OUT Gaussian only
             (needs no IN shadows, so new targets need no new shadow training).
    """
    shadow_conf = np.asarray(shadow_conf, dtype=np.float64)
    shadow_in = np.asarray(shadow_in, dtype=bool)
    if shadow_conf.shape != shadow_in.shape:
        raise ValueError(f"shadow_conf {shadow_conf.shape} and shadow_in {shadow_in.shape} differ")
    conf = np.atleast_2d(np.asarray(target_conf, dtype=np.float64))
    mu_out, sd_out = _per_example_gaussian(shadow_conf, ~shadow_in, fix_variance)
    if not online:
        return -norm.logsf(conf, loc=mu_out, scale=sd_out)
    mu_in, sd_in = _per_example_gaussian(shadow_conf, shadow_in, fix_variance)
    return norm.logpdf(conf, mu_in, sd_in) - norm.logpdf(conf, mu_out, sd_out)


def lira(target_conf: np.ndarray, target_in: np.ndarray, shadow_conf: np.ndarray, shadow_in: np.ndarray, *,
         online: bool = True, fix_variance: bool = True) -> AttackResult:
    """LiRA against target model(s): `target_in` ((T, n) or (n,)) is the ground truth
    membership of each example in each target. Reports AUC, TPR at 1 % / 0.1 % FPR and the
    balanced accuracy of "Λ > 0" (online) or "p < 0.5" (offline)."""
    conf, label = _as_targets(target_conf, target_in, np.shape(shadow_conf)[1])
    scores = lira_scores(conf, shadow_conf, shadow_in, online=online, fix_variance=fix_variance)
    return summarize(scores, label, threshold=0.0 if online else -np.log(0.5))


def u_lira(target_conf: np.ndarray, target_unlearned: np.ndarray, shadow_conf: np.ndarray,
           shadow_unlearned: np.ndarray, *, fix_variance: bool = True) -> AttackResult:
    """U-LiRA (Hayes et al.): can a per-example attacker tell *unlearned* from *retrained*?

    For each example x, shadows that trained on x and then unlearned it with the method under
    test (`shadow_unlearned` True) give the "unlearned" Gaussian of φ(x); shadows that never
    saw x (False) play the retrained model and give the "retrained" Gaussian. Held-out target
    models (`target_unlearned`: ground truth per example) are scored with the online
    likelihood ratio. `accuracy` is the balanced accuracy of "Λ > 0": 0.5 = the method is
    indistinguishable from retraining for these examples (the paper's headline number); AUC and
    TPR at low FPR are reported as for LiRA.
    """
    conf, label = _as_targets(target_conf, target_unlearned, np.shape(shadow_conf)[1])
    scores = lira_scores(conf, shadow_conf, shadow_unlearned, online=True, fix_variance=fix_variance)
    return summarize(scores, label, threshold=0.0)
