"""`sharded_retrain`: exact unlearning of a sharded classifier (SISA) — retrain only the members
whose shard lost samples, each from its checkpoint before the first slice that held one.

The end of every chain of a sharded model (`tasks.batch.chain_for` checks it). Its cost is the
retrained members' remaining slices: for one data subject one member from one slice, for a
class every member from the start. docs/methods/sharded_retrain.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import (
    ALL_KINDS,
    UnlearnResult,
    build_values,
    check_choices,
    check_positive,
    require_model,
)
from unlearn_ops.models.sharded import POOL, ShardedEnsemble
from unlearn_ops.sharding import MemberSchedule, retrain_members
from unlearn_ops.training import OPTIMIZERS

# Exact unlearning: no retrained member ever saw a removed sample, and no other member did
# (gates of `unlearn_ops.verify.gates.POWER_GATES` do not apply).
EXACT = True
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    # The pipeline takes these from the model's build section (`schedule_from_build`: each
    # member repeats the build's schedule on its shard); the defaults serve direct calls.
    epochs: float = 3          # each member's passes over its shard (spread over its slices)
    lr: float = 1e-3           # learning rate
    batch_size: int = 128      # samples per step
    optimizer: str = "adam"    # adam | sgd (the build trains with Adam)
    weight_decay: float = 0.0  # the build uses none
    seed: int = 0              # the build's seed (member i's seeds derive from it)
    pool_epochs: float = 0.0   # the warm start's passes over the shared pool (0: the model has no pool)

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "lr", "batch_size")
        if self.pool_epochs < 0:
            raise ValueError(f"sharded_retrain: pool_epochs must be >= 0, not {self.pool_epochs!r}")
        check_choices(self, {"optimizer": OPTIMIZERS})


def schedule_from_build(build: Mapping[str, Any]) -> dict[str, Any]:
    """The classifier build's schedule (params.yaml `train`) as Config fields."""
    return build_values("sharded_retrain", build, {k: k for k in ("epochs", "lr", "batch_size", "seed", "pool_epochs")})


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, ShardedEnsemble, "sharded_retrain retrains the members of a sharded classifier (train.shards)")
    logs: list[str] = []
    schedule = MemberSchedule(cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed, cfg.optimizer, cfg.weight_decay, device,
                              cfg.pool_epochs)
    new, retrained = retrain_members(model, splits.retain, schedule, progress=logs.append)
    untouched = sorted(set(range(model.shards)) - {r["member"] for r in retrained})
    details = {"shards": model.shards, "slices": model.slices, "retrained": retrained, "untouched": untouched,
               "summary": summary(retrained, model.slices)}
    return UnlearnResult(new, "sharded_retrain", details=details, log=logs)


def summary(retrained: list[dict[str, int]], slices: int) -> str:
    """One sentence for the certificate: which members were retrained from which slice."""
    if not retrained:
        return "no member was trained on the forget set: nothing retrained"
    parts = [f"the shared warm start on its pool ({r['removed']} samples removed, {r['retained']} kept), then"
             if r["member"] == POOL else
             f"member {r['member']} from slice {r['from_slice'] + 1} of {slices} "
             f"({r['removed']} samples removed, {r['retained']} kept)" for r in retrained]
    return "retrained " + "; ".join(parts)
