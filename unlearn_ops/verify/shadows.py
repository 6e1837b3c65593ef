"""Shadow and target models for the per-example attacks (LiRA, U-LiRA), as plain functions.

Design (Carlini et al.): every attacked example of a `pool` is IN exactly K/2 of the K shadows
(`plan_shadows`), so each example gets IN and OUT statistics from the same number of models.
The attack is then judged on *target* models trained the same way but with their own,
independent coin flips (`plan_targets`), so the shadows' counts never depend on the target.

U-LiRA (Hayes et al.): a set of `targets` examples is drawn from the pool; every model trains
on all other pool examples plus the targets that are IN for it, and then *unlearns* exactly
those IN targets with the method under test. For target example x, the models that unlearned x
give the "unlearned" distribution of φ(x); the models that never saw x play the retrained model.

One model is one call of `train_shadow` (what `tasks/shadow.py` maps over a Dask cluster);
`train_shadows` is the sequential loop for tests and small CPU runs. K defaults to 4 on CPU:
enough to run the attack end to end, far from the ≈ 256 of the papers (docs/verification.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.models import build_model
from unlearn_ops.progress import track
from unlearn_ops.training import TrainConfig, fit, predict_logits
from unlearn_ops.utils import seed_everything
from unlearn_ops.verify.lira import AttackResult, lira, logit_scaled_confidence, u_lira

DEFAULT_K = 4             # shadows on CPU; raise it on a GPU or a Dask cluster
TARGET_SEED_OFFSET = 10_000  # target models' training seeds never collide with a shadow's


@dataclass(frozen=True)
class ShadowPlan:
    """For each of K models and n pool examples: `member` (trained on), `forget` (trained on
    and then unlearned; U-LiRA only, else all False), and the attacked examples `targets` (n,)."""

    member: np.ndarray
    forget: np.ndarray
    targets: np.ndarray

    @property
    def k(self) -> int:
        return len(self.member)

    @property
    def unlearning(self) -> bool:
        return bool(self.forget.any())


def _target_mask(n: int, targets: int | None, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if targets is None:
        mask[:] = True
    else:
        if not 0 < targets < n:
            raise ValueError(f"targets must be in 1..{n - 1}, got {targets}")
        mask[rng.choice(n, size=targets, replace=False)] = True
    return mask


def _assemble(coin: np.ndarray, target_mask: np.ndarray, unlearn: bool) -> ShadowPlan:
    if not unlearn:  # LiRA: every example is attacked and IN by the coin
        return ShadowPlan(coin, np.zeros_like(coin), target_mask)
    member = coin | ~target_mask[None, :]   # non-target examples are always trained on
    return ShadowPlan(member, member & target_mask[None, :], target_mask)


def plan_shadows(n: int, k: int = DEFAULT_K, seed: int = 0, targets: int | None = None) -> ShadowPlan:
    """K shadows; each attacked example IN exactly k // 2 of them. `targets` = None: LiRA over the
    whole pool; an int: U-LiRA over that many random target examples (IN ones are unlearned)."""
    if k < 2:
        raise ValueError(f"need at least 2 shadow models, got {k}")
    rng = np.random.default_rng(seed)
    target_mask = _target_mask(n, targets, rng)
    coin = rng.random((k, n)).argsort(0) < k // 2  # per example, a random k // 2 of the shadows
    return _assemble(coin, target_mask, targets is not None)


def plan_targets(shadows: ShadowPlan, t: int = 1, seed: int = 0) -> ShadowPlan:
    """T held-out target models: same attacked examples, independent fair coins per example."""
    coin = np.random.default_rng(seed + TARGET_SEED_OFFSET).random((t, len(shadows.targets))) < 0.5
    return _assemble(coin, shadows.targets, shadows.unlearning)


def shadow_splits(pool: Part, plan: ShadowPlan, index: int, num_classes: int) -> Splits:
    """Model `index`'s world for the unlearning method: forget = its IN targets, retain = the rest
    of its IN examples, and its OUT examples in halves as test / non-member pool."""
    out = np.flatnonzero(~plan.member[index])
    return Splits(forget=pool.subset(np.flatnonzero(plan.forget[index])),
                  retain=pool.subset(np.flatnonzero(plan.member[index] & ~plan.forget[index])),
                  test=pool.subset(out[::2]), nonmember=pool.subset(out[1::2]), num_classes=num_classes)


def confidences(model: nn.Module, part: Part) -> np.ndarray:
    """Logit-scaled confidence φ of `model` on every sample of `part`."""
    return logit_scaled_confidence(predict_logits(model, part.x), part.y)


def train_shadow(spec: dict[str, Any], pool: Part, plan: ShadowPlan, index: int, cfg: TrainConfig,
                 method: str | None = None, params: dict[str, Any] | None = None,
                 device: str = "cpu") -> tuple[nn.Module, np.ndarray]:
    """Train model `index` of `plan` on its IN examples with `cfg` (the caller sets the seed);
    for a U-LiRA plan, unlearn its IN targets with `method`. Returns (model on CPU, φ over the
    pool); φ is NaN where the example is on neither side (not attacked, or kept in U-LiRA)."""
    cfg = replace(cfg, device=device)
    seed_everything(cfg.seed)
    model = build_model(spec)
    fit(model, pool.where(plan.member[index]), cfg)
    if plan.unlearning:
        if method is None:
            raise ValueError("a U-LiRA plan needs the unlearning method under test")
        from unlearn_ops.methods import run_method  # methods may import verify: keep this edge lazy

        splits = shadow_splits(pool, plan, index, int(spec.get("num_classes", int(pool.y.max()) + 1)))
        model = run_method(method, model, splits, params, device=device).model
    model = model.cpu().eval()
    conf = confidences(model, pool)
    side_known = plan.targets & (plan.forget[index] | ~plan.member[index] if plan.unlearning else True)
    return model, np.where(side_known, conf, np.nan)


@dataclass
class ShadowSet:
    """φ of K shadows and T held-out targets over the pool, with their plans."""

    shadows: ShadowPlan
    shadow_conf: np.ndarray          # (K, n)
    targets: ShadowPlan
    target_conf: np.ndarray          # (T, n)
    method: str | None = None

    def attack(self, online: bool = True) -> AttackResult:
        """LiRA (membership of each target model) or, for a U-LiRA plan, U-LiRA (unlearned vs
        never seen). U-LiRA is always online: both sides need their Gaussians."""
        if not self.shadows.unlearning:
            return lira(self.target_conf, self.targets.member, self.shadow_conf, self.shadows.member, online=online)
        return u_lira(self.target_conf, self.targets.forget, self.shadow_conf, self.shadows.forget)


def model_seed(cfg: TrainConfig, index: int, target: bool = False) -> TrainConfig:
    """Seed of shadow `index` (cfg.seed + index) or of target `index` (offset, never colliding)."""
    return replace(cfg, seed=cfg.seed + index + (TARGET_SEED_OFFSET if target else 0))


def train_shadows(spec: dict[str, Any], pool: Part, cfg: TrainConfig, k: int = DEFAULT_K, t: int = 1,
                  seed: int = 0, method: str | None = None, params: dict[str, Any] | None = None,
                  targets: int | None = None, device: str = "cpu") -> ShadowSet:
    """K shadows and T targets one after the other (tasks/shadow.py runs them in parallel).
    With `method` this is U-LiRA over `targets` examples (default: a tenth of the pool)."""
    if method is not None and targets is None:
        targets = max(2, len(pool) // 10)
    shadows = plan_shadows(len(pool), k, seed, targets if method else None)
    held_out = plan_targets(shadows, t, seed)
    s_conf, t_conf = [], []
    with track("shadow models", k + t, "model") as bar:
        for j in range(k):
            s_conf.append(train_shadow(spec, pool, shadows, j, model_seed(cfg, j), method, params, device)[1])
            bar.advance()
            bar.note(f"shadow model {j + 1}/{k} trained")
        for j in range(t):
            t_conf.append(train_shadow(spec, pool, held_out, j, model_seed(cfg, j, True), method, params, device)[1])
            bar.advance()
            bar.note(f"target model {j + 1}/{t} trained")
    return ShadowSet(shadows, np.stack(s_conf), held_out, np.stack(t_conf), method)
