"""Training a sharded classifier (SISA) and retraining only what a deletion touched.

Member i trains on its shard's slices incrementally: stage r fits slices 0..r (a fresh optimizer
per stage) and the weights after every stage but the last are kept as checkpoints. Retraining a
member after a deletion loads its checkpoint before the first slice that lost a sample and runs
the remaining stages on exactly the retained samples. Every stage is a pure function of the
weights it starts from, its data (in shard-map order) and its seed, so the result equals training
that member from scratch on its retained shard, weight for weight (on CPU, one thread).

With a shared pool (SISA's transfer variant, `ShardMap.assign(pool_fraction=...)`), a model of
the members' architecture is first trained on the pool alone and every member starts from its
weights. A deletion from the pool retrains that warm start and then every member: still exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unlearn_ops.data.splits import Part
from unlearn_ops.models.sharded import POOL, ShardedEnsemble, ShardMap, ShardState, StateDict
from unlearn_ops.training import TrainConfig, fit, reinitialize

SEED_STRIDE = 1000  # member i's seeds are seed + 1000 i (+ its slice): members never share a data order


def sharding_of(build: Mapping[str, Any]) -> tuple[int, int, float]:
    """(shards, slices, pool_fraction) of a classifier's build section (params.yaml `train`);
    absent keys: (1, 1, 0.0), one monolithic model."""
    return int(build.get("shards", 1)), int(build.get("slices", 1)), float(build.get("pool_fraction", 0.0))


def is_sharded(build: Mapping[str, Any]) -> bool:
    """Whether the build trains a sharded model (the one place that decides it)."""
    return sharding_of(build) != (1, 1, 0.0)


@dataclass(frozen=True)
class MemberSchedule:
    """How every member trains: `epochs` passes over its own shard on average (see `stage`);
    the warm start, when the map has a shared pool, `pool_epochs` passes over the pool."""

    epochs: float
    lr: float
    batch_size: int
    seed: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    device: str = "auto"
    pool_epochs: float = 0.0

    def pool(self) -> TrainConfig:
        return TrainConfig(epochs=self.pool_epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, seed=self.seed + SEED_STRIDE * POOL, device=self.device)

    def stage(self, member: int, slice_: int, slices: int) -> TrainConfig:
        """Stage r fits slices 0..r for 2E/(R+1) epochs: a sample of slice j is seen in R - j
        stages, E times on average over the shard, and the member costs E passes over its shard
        whatever R is (SISA's slicing moves cost, it does not add any)."""
        return TrainConfig(epochs=self.epochs * 2 / (slices + 1), lr=self.lr, batch_size=self.batch_size,
                           optimizer=self.optimizer, weight_decay=self.weight_decay,
                           seed=self.seed + SEED_STRIDE * member + slice_, device=self.device)


def member_slices(data: Part, shard_map: ShardMap, member: int) -> list[Part]:
    """The member's slices, each in shard-map order; every mapped ID must be in `data`."""
    position = {sid: k for k, sid in enumerate(data.ids)}
    out = []
    for r in range(shard_map.slices):
        ids = shard_map.slice_ids(member, r)
        missing = [sid for sid in ids if sid not in position]
        if missing:
            raise ValueError(f"{len(missing)} samples of member {member}, slice {r} are not in the training data, "
                             f"e.g. {missing[:3]}")
        out.append(data.subset([position[sid] for sid in ids]))
    return out


def initial_member(spec: dict, init: StateDict | None, member: int, seed: int) -> nn.Module:
    """Member `member` before its first slice: the shared warm start, else a seeded fresh init."""
    from unlearn_ops.models import build_model

    new = build_model(spec)
    if init is not None:
        new.load_state_dict(init)
        return new
    return reinitialize(new, seed + SEED_STRIDE * member)


def train_member(member: nn.Module, slices: list[Part], start: int, schedule: MemberSchedule, index: int,
                 progress: Callable[[str], None] | None = None) -> dict[int, StateDict]:
    """Run stages start..R-1 in place; the checkpoints after stages start..R-2."""
    checkpoints: dict[int, StateDict] = {}
    for r in range(start, len(slices)):
        data = slices[0]
        for part in slices[1:r + 1]:
            data = data.concat(part)
        fit(member, data, schedule.stage(index, r, len(slices)),
            progress=(lambda msg, r=r: progress(f"member {index} slice {r}: {msg}")) if progress else None)
        if r < len(slices) - 1:
            checkpoints[r] = {k: v.detach().cpu().clone() for k, v in member.state_dict().items()}
    return checkpoints


def warm_start(member_spec: dict, data: Part, shard_map: ShardMap, schedule: MemberSchedule,
               progress: Callable[[str], None] | None = None) -> StateDict | None:
    """The members' shared starting weights: a member trained on the pool alone (None: no pool)."""
    from unlearn_ops.models import build_model

    if not shard_map.has_pool:
        return None
    if schedule.pool_epochs <= 0:
        raise ValueError("the shard map has a shared pool but the schedule gives it no epochs (pool_epochs)")
    position = {sid: k for k, sid in enumerate(data.ids)}
    pool = data.subset([position[sid] for sid in shard_map.member_ids(POOL)])
    cfg = schedule.pool()
    model = reinitialize(build_model(member_spec), cfg.seed)
    fit(model, pool, cfg, progress=(lambda msg: progress(f"shared pool: {msg}")) if progress else None)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_ensemble(member_spec: dict, data: Part, shard_map: ShardMap, schedule: MemberSchedule,
                   progress: Callable[[str], None] | None = None, init: StateDict | None = None) -> ShardedEnsemble:
    """Every member on its shard (`data` holds every mapped ID), with its checkpoints; from the
    pool's warm start when the map has a pool (`init`: that warm start, already trained by
    `warm_start` on this map's pool with this schedule; the benchmark shares one across shard counts)."""
    model = ShardedEnsemble(member_spec, shard_map.shards, shard_map.slices)
    if init is None:
        init = warm_start(member_spec, data, shard_map, schedule, progress)
    model.sharding = ShardState(shard_map, {}, init)
    checkpoints: dict[tuple[int, int], StateDict] = {}
    for i in range(shard_map.shards):
        member = initial_member(member_spec, init, i, schedule.seed)
        saved = train_member(member, member_slices(data, shard_map, i), 0, schedule, i, progress)
        checkpoints.update({(i, r): w for r, w in saved.items()})
        model.members[i] = member
    model.sharding = ShardState(shard_map, checkpoints, init)
    return model.eval()


def retrain_members(model: ShardedEnsemble, retain: Part, schedule: MemberSchedule,
                    progress: Callable[[str], None] | None = None) -> tuple[ShardedEnsemble, list[dict[str, int]]]:
    """Exact deletion of every mapped sample not in `retain`: each member that lost samples is
    retrained from its last kept checkpoint before the first slice that lost one, on its retained
    samples; the others are untouched. A loss from the shared pool retrains the warm start and
    every member from the start. Returns the new model (the input is not changed) and, per
    retrained member, how many samples it lost and the slice it was retrained from."""
    state = model.state()
    new_map = state.map.keep(retain.ids)
    checkpoints = dict(state.checkpoints)
    members: dict[int, nn.Module] = {}
    report = []
    removed = state.map.removed(retain.ids)
    if POOL in removed or state.needs_warm_start:  # every member started from weights trained on a removed sample
        pool = removed.pop(POOL, {"removed": 0})
        report.append({"member": POOL, "removed": pool["removed"], "from_slice": 0,
                       "retained": int((new_map.shard == POOL).sum())})
        state = ShardState(state.map, {}, warm_start(model.member_spec, retain, new_map, schedule, progress))
        checkpoints = {}
        removed = {i: removed.get(i, {"removed": 0, "first_slice": 0}) for i in range(model.shards)}
    for i, hit in removed.items():
        start = min(hit["first_slice"], state.valid_slices(i))
        member = initial_member(model.member_spec, state.init, i, schedule.seed)
        if start > 0:
            member.load_state_dict(state.checkpoints[(i, start - 1)])
        for r in range(start, model.slices):
            checkpoints.pop((i, r), None)  # trained on a removed sample (or stale): recomputed below
        saved = train_member(member, member_slices(retain, new_map, i), start, schedule, i, progress)
        checkpoints.update({(i, r): w for r, w in saved.items()})
        members[i] = member.to(_device(model))
        report.append({"member": i, "removed": hit["removed"], "from_slice": start,
                       "retained": int((new_map.shard == i).sum())})
    return model.with_members(members, ShardState(new_map, checkpoints, state.init)).eval(), report


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def with_member_results(model: ShardedEnsemble, new: Mapping[int, nn.Module], kept_ids: tuple[str, ...]) -> ShardedEnsemble:
    """The ensemble after an approximate method changed the members in `new`: samples outside
    `kept_ids` leave the map, and each member that lost any drops its checkpoints from the
    first slice that held one (they were trained on it; a later exact retrain starts before)."""
    state = model.state()
    drops = {i: hit["first_slice"] for i, hit in state.map.removed(kept_ids).items()}
    device = _device(model)
    return model.with_members({i: m.to(device) for i, m in new.items()}, state.dropping(drops, kept_ids))
