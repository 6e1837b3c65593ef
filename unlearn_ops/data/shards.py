"""The store's payload in shards grouped by data subject, so a deletion rewrites few files.

DVC versions every file of a directory output as its own cache object. With one `payload.npy`
every purge superseded a 52 MB object that still held the forgotten rows, and collecting it
meant dropping the whole data set's previous version. Here a data subject's rows live in one
shard (a subject is never split), so forgetting a subject supersedes one ~3 MB object:

    payload/shard-00000.npy   rows of a run of subjects (sorted by subject ID), ≤ rows_per_shard
    payload/…                 then rows without a subject (non-member / test pools), in index order
    payload/layout.npy        int64 (N, 2): shard and offset of each index row

The layout is written, not recomputed on read, so a later change of the index's subject column
(the facts store rewrites it with real people) cannot misplace a row. Within a shard, rows keep
index order. A sample deletion by ID or a class deletion still touches the shards its rows are in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unlearn_ops.utils import atomic_save_npy

SHARD_DIR = "payload"
LAYOUT = "layout.npy"
DEFAULT_ROWS_PER_SHARD = 4096


def shard_path(root: Path, shard: int) -> Path:
    return Path(root) / SHARD_DIR / f"shard-{shard:05d}.npy"


def pack(subject_ids: Sequence[str], rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> np.ndarray:
    """(N, 2) shard/offset per row: whole subjects packed greedily in ID order, then subject-less
    rows in blocks. Deterministic in `subject_ids` alone (a rebuild gives the same layout)."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, not {rows_per_shard}")
    subjects = np.asarray([str(s) for s in subject_ids], dtype=object)
    layout = np.empty((len(subjects), 2), dtype=np.int64)
    shard, fill = 0, 0
    has = subjects != ""
    if has.any():
        names, inverse = np.unique(subjects[has], return_inverse=True)
        sizes = np.bincount(inverse, minlength=len(names))
        shard_of = np.empty(len(names), dtype=np.int64)
        for k, size in enumerate(sizes):
            if fill and fill + size > rows_per_shard:
                shard, fill = shard + 1, 0
            shard_of[k], fill = shard, fill + int(size)
        layout[np.flatnonzero(has), 0] = shard_of[inverse]
        shard, fill = shard + 1, 0
    rest = np.flatnonzero(~has)
    layout[rest, 0] = shard + np.arange(len(rest)) // rows_per_shard
    # offsets: position among the rows of the same shard, in index order
    order = np.argsort(layout[:, 0], kind="stable")
    starts = np.searchsorted(layout[order, 0], layout[order, 0], side="left")
    layout[order, 1] = np.arange(len(order)) - starts
    return layout


def write(root: Path, payload: np.ndarray, layout: np.ndarray) -> int:
    """Write every shard and the layout; removes shards left over from a larger layout."""
    root = Path(root)
    n = int(layout[:, 0].max()) + 1 if len(layout) else 0
    for s in range(n):
        rows = np.flatnonzero(layout[:, 0] == s)
        atomic_save_npy(shard_path(root, s), np.ascontiguousarray(payload[rows[np.argsort(layout[rows, 1])]]))
    for stale in (root / SHARD_DIR).glob("shard-*.npy"):
        if int(stale.stem.split("-")[1]) >= n:
            stale.unlink()
    atomic_save_npy(root / SHARD_DIR / LAYOUT, layout)
    return n


class Shards:
    """Read and zero rows of a sharded payload (rows addressed by index position)."""

    def __init__(self, root: Path, n_shards: int) -> None:
        self.root = Path(root)
        self.layout = np.load(self.root / SHARD_DIR / LAYOUT, allow_pickle=False)
        self.n = n_shards

    def shard(self, s: int) -> np.ndarray:
        return np.load(shard_path(self.root, s), mmap_mode="r", allow_pickle=False)

    def rows(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        first = self.shard(0)
        out = np.empty((len(positions), *first.shape[1:]), dtype=first.dtype)
        where = self.layout[positions]
        order = np.argsort(where[:, 0], kind="stable")
        bounds = np.searchsorted(where[order, 0], np.arange(self.n + 1))
        for s in range(self.n):
            pick = order[bounds[s]:bounds[s + 1]]
            if len(pick):
                out[pick] = self.shard(s)[where[pick, 1]]
        return out

    def all(self) -> np.ndarray:
        return self.rows(np.arange(len(self.layout)))

    def zero(self, positions: np.ndarray, empty: str | int) -> list[int]:
        """Overwrite the rows at `positions` with `empty` ("" or 0); returns the shards rewritten."""
        where = self.layout[np.asarray(positions, dtype=np.int64)]
        touched = sorted(int(s) for s in np.unique(where[:, 0]))
        for s in touched:
            data = np.array(self.shard(s))  # copy out of the memory map before rewriting
            data[where[where[:, 0] == s, 1]] = empty
            atomic_save_npy(shard_path(self.root, s), data)
        return touched
