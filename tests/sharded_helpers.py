"""A tiny sharded digits classifier (SISA): 3 members × 3 slices of the tiny CNN, built on one
thread so that exact retraining can be compared weight for weight."""

from __future__ import annotations

from contextlib import AbstractContextManager

from tests.conftest import TINY_SPEC
from unlearn_ops.data.store import SampleStore
from unlearn_ops.models.sharded import ShardedEnsemble, ShardMap
from unlearn_ops.sharding import MemberSchedule, train_ensemble
from unlearn_ops.utils import torch_threads

SHARDS, SLICES = 3, 3
SCHEDULE = {"epochs": 6, "lr": 3e-3, "batch_size": 64, "seed": 0}  # the sharded build's `train` schedule
POOLED = {**SCHEDULE, "pool_epochs": 5}                              # ... with a shared warm-start pool
POOL_FRACTION = 0.2


def one_thread() -> AbstractContextManager[None]:
    """Bit-identical training needs the same kernels in the same order: one thread."""
    return torch_threads(1)


def shard_map(store: SampleStore, ids: list[str] | None = None, shards: int = SHARDS, slices: int = SLICES,
              pool_fraction: float = 0.0) -> ShardMap:
    ids = list(ids if ids is not None else store.active_ids())
    return ShardMap.assign(ids, store.index.loc[ids, "subject_id"].tolist(), shards, slices, pool_fraction)


def build_sharded(store: SampleStore, shards: int = SHARDS, slices: int = SLICES, pooled: bool = False,
                  retain_ids: list[str] | None = None) -> ShardedEnsemble:
    """What the sharded build does, on the store's active digits (or `retain_ids`)."""
    with one_thread():
        retain = store.splits(retain_ids=retain_ids).retain
        m = shard_map(store, list(retain.ids), shards, slices, POOL_FRACTION if pooled else 0.0)
        return train_ensemble(dict(TINY_SPEC), retain, m, MemberSchedule(**(POOLED if pooled else SCHEDULE),
                                                                          device="cpu"))


def subject_in_slice(store: SampleStore, model: ShardedEnsemble, slice_: int, shard: int | None = None) -> str:
    """A data subject whose samples are all in `slice_` of a member (of `shard`: -1 = the pool;
    None: any member), the first found."""
    m = model.state().map
    where = dict(zip(m.ids, zip(m.shard.tolist(), m.slice.tolist(), strict=True), strict=True))
    for subject, rows in store.index[store.index.pool == "train"].groupby("subject_id"):
        places = {where.get(i) for i in rows.sample_id}
        if len(places) == 1 and None not in places:
            [(s, r)] = places
            if r == slice_ and (s == shard if shard is not None else s >= 0):
                return str(subject)
    raise LookupError(f"no subject in slice {slice_} of shard {shard}")
