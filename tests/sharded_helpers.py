"""A tiny sharded digits classifier (SISA): 3 members × 3 slices of the tiny CNN, built on one
thread so that exact retraining can be compared weight for weight."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tests.conftest import TINY_SPEC
from unlearn_ops.data.store import SampleStore
from unlearn_ops.models.sharded import ShardedEnsemble, ShardMap
from unlearn_ops.sharding import MemberSchedule, train_ensemble

SHARDS, SLICES = 3, 3
SCHEDULE = {"epochs": 6, "lr": 3e-3, "batch_size": 64, "seed": 0}  # the sharded build's `train` schedule


@contextmanager
def one_thread() -> Iterator[None]:
    """Bit-identical training needs the same kernels in the same order: one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def shard_map(store: SampleStore, ids: list[str] | None = None, shards: int = SHARDS, slices: int = SLICES) -> ShardMap:
    ids = list(ids if ids is not None else store.active_ids())
    return ShardMap.assign(ids, store.index.loc[ids, "subject_id"].tolist(), shards, slices)


def build_sharded(store: SampleStore, shards: int = SHARDS, slices: int = SLICES) -> ShardedEnsemble:
    """What the sharded build does, on the store's active digits."""
    with one_thread():
        retain = store.splits().retain
        return train_ensemble(dict(TINY_SPEC), retain, shard_map(store, list(retain.ids), shards, slices),
                              MemberSchedule(**SCHEDULE, device="cpu"))


def subject_in_slice(store: SampleStore, model: ShardedEnsemble, slice_: int) -> str:
    """A data subject whose samples are all in `slice_` of one member (the first found)."""
    m = model.state().map
    where = dict(zip(m.ids, m.slice.tolist(), strict=True))
    for subject, rows in store.index[store.index.pool == "train"].groupby("subject_id"):
        if all(where.get(i) == slice_ for i in rows.sample_id):
            return str(subject)
    raise LookupError(f"no subject in slice {slice_}")
