"""Entity groups for text stores (e.g. Rotten Tomatoes `movie_name`), until the store has a column.

The sample store's index has no place for a per-sample entity, so a `concept` deletion request
("forget every snippet about movie X") cannot be resolved from the store alone. This helper keeps
the mapping in a sidecar file beside the index:

    <store>/groups.csv    sample_id, group      (one row per sample of the pools that have one)

written once from the loader's `RawDataset.extra[split][column]`, using the same ID scheme as
`build_store` (`<name>/<split>/<row:06d>`, the row being the position in the split array).

Integration note: the cleaner home is an optional `group` column in `index.csv` filled by
`build_store(raw, root, group_column="movie_name")` and a `SampleStore.group_ids(value, pool)`
method; `group_ids` below has that signature so callers do not change when it moves. Group
names are metadata, not payload: purging a sample keeps its group (like its label and hash),
so an audit can still say which entity was forgotten.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from unlearn_ops.data.sources import RawDataset
from unlearn_ops.data.store import SampleStore, StoreError
from unlearn_ops.utils import atomic_write_text

GROUPS_FILE = "groups.csv"


def write_groups(store: SampleStore, raw: RawDataset, column: str = "movie_name") -> Path:
    """Write `<store>/groups.csv` from `raw.extra[split][column]` for the splits that have it."""
    if raw.name != store.name:
        raise StoreError(f"raw data set {raw.name!r} does not match the store {store.name!r}")
    frames = []
    for split, (_, labels) in raw.splits.items():
        values = raw.extra.get(split, {}).get(column)
        if values is None:
            continue
        if len(values) != len(labels):
            raise StoreError(f"{column!r} has {len(values)} values for {len(labels)} {split} samples")
        frames.append(pd.DataFrame({"sample_id": [f"{raw.name}/{split}/{i:06d}" for i in range(len(values))],
                                    "group": [str(v) for v in values]}))
    if not frames:
        raise StoreError(f"{raw.name} has no {column!r} column in any split")
    table = pd.concat(frames, ignore_index=True)
    unknown = store.unknown_ids(table.sample_id.tolist()[:1] + table.sample_id.tolist()[-1:])
    if unknown:
        raise StoreError(f"group IDs do not match the store's IDs, e.g. {unknown[:2]}")
    path = store.root / GROUPS_FILE
    atomic_write_text(path, table.to_csv(index=False))
    return path


def groups(store: SampleStore) -> pd.Series:
    """sample_id → group for every sample that has one."""
    path = store.root / GROUPS_FILE
    if not path.is_file():
        raise StoreError(f"{store.root} has no {GROUPS_FILE}: run write_groups(store, raw, column) once")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table.set_index("sample_id")["group"]


def group_ids(store: SampleStore, value: str, pool: str = "train") -> list[str]:
    """IDs of `pool` whose group is `value` (exact match), in store order; purged ones included
    so a repeated request resolves to the same IDs (the caller filters by the active manifest)."""
    mapping = groups(store)
    ids = store.pool_ids(pool)
    hits = [i for i in ids if mapping.get(i) == value]
    return hits


__all__ = ["GROUPS_FILE", "group_ids", "groups", "write_groups"]
