"""The sample store: every sample with a stable ID, its label, content hash and data subject.

On disk (`data/store/<dataset>/`):

    index.csv              one row per sample: sample_id, pool, row, label, subject_id, sha256, purged
    payload/shard-*.npy    the samples (uint8 images or unicode text; never pickled), grouped by
                           data subject so a deletion supersedes one small DVC object (shards.py)
    payload/layout.npy     where each index row lives (shard, offset)
    meta.json              data set name, class names, seeds, counts, payload layout
    manifests/active.json  the IDs a model may be trained on now

Pools: `train` samples are members (the active manifest starts as all of them); the source's
test split is cut in two by a seed: `nonmember` (never trained on; the reference population for
membership attacks and the analysis data of zero-shot methods) and `test` (utility).

Data subjects are **synthetic** for the public data sets: the train pool is shuffled with
`subject_seed` and cut into consecutive runs of 1..`max_subject_size` samples, one subject each
(`subj-00000`, …). The same seed always gives the same subjects.

Forgetting removes IDs from the active manifest and purges their bytes from the payload (the row
is zeroed, the hash kept so an audit can prove what was removed). Every write is atomic.
Stores written before the sharded layout keep one `payload.npy` (index order); they are read as
they are and converted to shards by their first purge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unlearn_ops.data import shards
from unlearn_ops.data.sources import RawDataset
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.utils import atomic_write_json, atomic_write_text, sha256_bytes

POOLS = ("train", "nonmember", "test")


class StoreError(ValueError):
    """A request against the store that cannot be satisfied (unknown ID, bad manifest …)."""


def row_bytes(value: np.ndarray | str) -> bytes:
    """The bytes a sample's sha256 is taken over: the UTF-8 text, or the row's raw bytes."""
    return value.encode("utf-8") if isinstance(value, str) else np.ascontiguousarray(value).tobytes()


def content_hashes(payload: np.ndarray) -> list[str]:
    return [sha256_bytes(row_bytes(v if payload.dtype.kind != "U" else str(v))) for v in payload]


def assign_subjects(n: int, seed: int, max_size: int) -> np.ndarray:
    """Synthetic data subjects: shuffle, then cut into runs of 1..max_size samples."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    subject = np.empty(n, dtype=object)
    start, k = 0, 0
    while start < n:
        size = int(rng.integers(1, max_size + 1))
        subject[order[start:start + size]] = f"subj-{k:05d}"
        start, k = start + size, k + 1
    return subject


def build_store(raw: RawDataset, root: Path, *, subject_seed: int = 0, max_subject_size: int = 40,
                nonmember_fraction: float = 0.5, split_seed: int = 0,
                exclude: Iterable[str] = (), rows_per_shard: int = shards.DEFAULT_ROWS_PER_SHARD) -> SampleStore:
    """Write a fresh store for `raw` under `root`.

    `exclude` lists IDs forgotten earlier (from the forget-set records): they are purged and kept
    out of the active manifest, so rebuilding the store never brings deleted data back.
    """
    root = Path(root)
    frames, payloads = [], []
    x_tr, y_tr = raw.splits["train"]
    frames.append(pd.DataFrame({
        "sample_id": [f"{raw.name}/train/{i:06d}" for i in range(len(y_tr))],
        "pool": "train", "row": np.arange(len(y_tr)), "label": y_tr,
        "subject_id": assign_subjects(len(y_tr), subject_seed, max_subject_size)}))
    payloads.append(x_tr)
    x_te, y_te = raw.splits["test"]
    nonmember = np.zeros(len(y_te), dtype=bool)
    nonmember[np.random.default_rng(split_seed).permutation(len(y_te))[: int(round(len(y_te) * nonmember_fraction))]] = True
    frames.append(pd.DataFrame({
        "sample_id": [f"{raw.name}/test/{i:06d}" for i in range(len(y_te))],
        "pool": np.where(nonmember, "nonmember", "test"), "row": np.arange(len(y_te)), "label": y_te,
        "subject_id": ""}))
    payloads.append(x_te)
    index = pd.concat(frames, ignore_index=True)
    payload = np.concatenate(payloads)
    index["sha256"] = content_hashes(payload)
    index["purged"] = False
    excluded = set(exclude)
    unknown = excluded - set(index.sample_id)
    if unknown:
        raise StoreError(f"{len(unknown)} forgotten IDs are not in {raw.name}: {sorted(unknown)[:5]}")
    gone = index.sample_id.isin(excluded).to_numpy()
    payload[gone] = "" if payload.dtype.kind == "U" else 0
    index.loc[gone, "purged"] = True
    meta = {"dataset": raw.name, "classes": list(raw.classes), "subject_seed": subject_seed,
            "max_subject_size": max_subject_size, "split_seed": split_seed,
            "nonmember_fraction": nonmember_fraction,
            "counts": {p: int((index.pool == p).sum()) for p in POOLS},
            "payload_shape": list(payload.shape[1:]), "payload_dtype": str(payload.dtype)}
    root.mkdir(parents=True, exist_ok=True)
    layout = shards.pack(index.subject_id.to_numpy(), rows_per_shard)
    meta["payload_layout"] = {"shards": shards.write(root, payload, layout), "rows_per_shard": rows_per_shard}
    (root / "payload.npy").unlink(missing_ok=True)  # a store rebuilt over a pre-shard one
    atomic_write_text(root / "index.csv", index.to_csv(index=False))
    atomic_write_json(root / "meta.json", meta)
    store = SampleStore(root)
    store.write_manifest(index.sample_id[(index.pool == "train") & ~index.purged].tolist())
    return store


@dataclass
class SampleStore:
    """Read and update one data set's store. Cheap to open; payload is memory-mapped."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not (self.root / "index.csv").is_file():
            raise StoreError(f"no sample store at {self.root} (run the import stage: `dvc repro import`)")

    # ---- reading
    @cached_property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    @cached_property
    def index(self) -> pd.DataFrame:
        df = pd.read_csv(self.root / "index.csv", dtype={"subject_id": str}, keep_default_na=False)
        return df.set_index("sample_id", drop=False)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def name(self) -> str:
        return str(self.meta["dataset"])

    def _shards(self) -> shards.Shards | None:
        layout = self.meta.get("payload_layout")
        return shards.Shards(self.root, layout["shards"]) if layout else None

    def payload(self) -> np.ndarray:
        """Every sample, in index order (a pre-shard store: its memory-mapped payload.npy)."""
        sharded = self._shards()
        if sharded is None:
            return np.load(self.root / "payload.npy", mmap_mode="r", allow_pickle=False)
        return sharded.all()

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The stored rows of `ids` as they are on disk (a purged row is zeros / "")."""
        missing = self.unknown_ids(ids)
        if missing:
            raise StoreError(f"{len(missing)} unknown sample IDs, e.g. {missing[:3]}")
        return self._rows_at(self.index.index.get_indexer(list(ids)))

    def _rows_at(self, positions: np.ndarray) -> np.ndarray:
        sharded = self._shards()
        return self.payload()[positions] if sharded is None else sharded.rows(positions)

    def manifest_path(self, name: str = "active") -> Path:
        return self.root / "manifests" / f"{name}.json"

    def active_ids(self) -> list[str]:
        return list(json.loads(self.manifest_path().read_text())["ids"])

    def pool_ids(self, pool: str) -> list[str]:
        if pool not in POOLS:
            raise StoreError(f"unknown pool {pool!r}; pools are {POOLS}")
        return self.index.sample_id[self.index.pool == pool].tolist()

    def unknown_ids(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        return [ids[k] for k in np.flatnonzero(self.index.index.get_indexer(ids) < 0)] if ids else []

    def subject_ids(self, subject: str) -> list[str]:
        return self.index.sample_id[self.index.subject_id == subject].tolist()

    def class_ids(self, label: int, pool: str = "train") -> list[str]:
        idx = self.index
        return idx.sample_id[(idx.label == label) & (idx.pool == pool)].tolist()

    def class_index(self, label: int | str) -> int:
        """Accept a class index or its name (case-insensitive)."""
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            names = [c.lower() for c in self.classes]
            if label.lower() not in names:
                raise StoreError(f"unknown class {label!r}; classes are {self.classes}")
            return names.index(label.lower())
        value = int(label)
        if not 0 <= value < len(self.classes):
            raise StoreError(f"class {value} out of range 0..{len(self.classes) - 1}")
        return value

    def hashes(self, ids: Sequence[str]) -> list[str]:
        return self.index.loc[list(ids), "sha256"].tolist()

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        return self.index.loc[list(ids), "label"].to_numpy(np.int64)

    def part(self, ids: Sequence[str]) -> Part:
        """Tensors for `ids` (images scaled to [0, 1]); refuses purged or unknown IDs."""
        ids = list(ids)
        positions = self.index.index.get_indexer(ids)  # one lookup for the checks and the rows
        if (positions < 0).any():
            missing = [ids[k] for k in np.flatnonzero(positions < 0)]
            raise StoreError(f"{len(missing)} unknown sample IDs, e.g. {missing[:3]}")
        rows = self.index.iloc[positions]
        if rows.purged.any():
            raise StoreError(f"{int(rows.purged.sum())} requested samples were purged, e.g. "
                             f"{rows.sample_id[rows.purged].tolist()[:3]}")
        data = self._rows_at(positions)
        if data.dtype.kind == "U":
            return Part(tuple(ids), data, torch.from_numpy(rows.label.to_numpy(np.int64).copy()))
        x = data.astype(np.float32)
        x /= 255.0  # in place: the same values as `/ 255.0` without a second copy (5x faster on 60 000 images)
        return Part(tuple(ids), torch.from_numpy(x), torch.from_numpy(rows.label.to_numpy(np.int64).copy()))

    def splits(self, forget_ids: Sequence[str] = (), retain_ids: Sequence[str] | None = None) -> Splits:
        """forget / retain / test / nonmember parts; retain defaults to active minus forget."""
        forget = list(forget_ids)
        if retain_ids is None:
            fs = set(forget)
            retain_ids = [i for i in self.active_ids() if i not in fs]
        return Splits(forget=self.part(forget), retain=self.part(retain_ids),
                      test=self.part(self.pool_ids("test")), nonmember=self.part(self.pool_ids("nonmember")),
                      num_classes=len(self.classes))

    # ---- writing (all atomic)
    def write_manifest(self, ids: Sequence[str], name: str = "active") -> Path:
        path = self.manifest_path(name)
        atomic_write_json(path, {"dataset": self.meta["dataset"], "count": len(ids), "ids": list(ids)}, indent=None)
        return path

    def purge(self, ids: Iterable[str]) -> int:
        """Zero the payload rows of `ids` and mark them purged; returns how many were new."""
        ids = set(ids)
        missing = self.unknown_ids(ids)
        if missing:
            raise StoreError(f"cannot purge unknown IDs, e.g. {missing[:3]}")
        index = self.index.copy()
        hit = index.sample_id.isin(ids).to_numpy() & ~index.purged.to_numpy()
        if not hit.any():
            return 0
        empty = "" if np.dtype(self.meta["payload_dtype"]).kind == "U" else 0
        sharded = self._shards()
        if sharded is None:  # a pre-shard store: convert it (its one payload.npy is superseded once)
            payload = np.array(self.payload())
            payload[hit] = empty
            self.rewrite_payload(payload)
        else:
            sharded.zero(np.flatnonzero(hit), empty)
        index.loc[hit, "purged"] = True
        atomic_write_text(self.root / "index.csv", index.reset_index(drop=True).to_csv(index=False))
        self.__dict__.pop("index", None)
        return int(hit.sum())

    def rewrite_payload(self, payload: np.ndarray, rows_per_shard: int | None = None) -> None:
        """Replace every row (index order) and write the sharded layout; converts a pre-shard store."""
        if len(payload) != len(self.index):
            raise StoreError(f"payload has {len(payload)} rows, the index {len(self.index)}")
        old = self.meta.get("payload_layout") or {}
        per = rows_per_shard or old.get("rows_per_shard", shards.DEFAULT_ROWS_PER_SHARD)
        layout = shards.pack(self.index.subject_id.to_numpy(), per)
        meta = {**self.meta, "payload_layout": {"shards": shards.write(self.root, payload, layout), "rows_per_shard": per},
                "payload_dtype": str(payload.dtype)}
        atomic_write_json(self.root / "meta.json", meta)
        (self.root / "payload.npy").unlink(missing_ok=True)
        self.__dict__.pop("meta", None)
