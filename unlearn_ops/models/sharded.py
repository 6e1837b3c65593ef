"""A sharded classifier (SISA, Bourtoule et al., arXiv 1912.03817): S members, each trained only
on its own disjoint shard of the training data, served as one model.

The ensemble's forward returns the log of the members' mean probability, so softmax, argmax and
cross-entropy (every metric and gate) see the ensemble as one classifier. Beside the members it
carries what exact deletion needs (`ShardState`):

- the shard map: which shard and slice each training sample is in. All samples of a data
  subject share one shard and one slice (a stable hash of the subject ID, else of the sample
  ID), so one person's deletion touches one member, from one slice on. Optionally a share of
  the subjects forms a shared pool (shard -1, SISA's transfer variant): a model trained on it
  alone warm-starts every member. A deletion from the pool is still exact, at the price of a
  full rebuild (the warm start and every member);
- checkpoints: each member's weights after each of its slices but the last (the last is the
  member itself). A checkpoint after a slice that held forgotten data holds that data, so a
  deletion drops or recomputes it; old model versions keep theirs until retention deletes them;
- `init`: shared warm-start weights of every member (None: each member starts from a seeded
  fresh initialisation).

On disk beside `spec.json` + `model.safetensors` (the members; the classifier pyfunc serves that
alone): `shard_state.safetensors` (checkpoints and init) and `shard_map.json`. The classifier
family (unlearn_ops/families.py) saves and loads all three; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

ARCH = "sharded"
MAP_FILE, STATE_FILE = "shard_map.json", "shard_state.safetensors"
POOL = -1  # the shard value of the shared warm-start pool
StateDict = Mapping[str, torch.Tensor]


def stable_bucket(key: str, buckets: int, salt: str) -> int:
    """A bucket in [0, buckets) from sha256 (Python's hash() changes between runs)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


@dataclass(frozen=True, eq=False)
class ShardMap:
    """Sample → (shard, slice), in training order (the order members see their samples in);
    shard `POOL` (-1): the shared pool that trains the members' warm start."""

    shards: int
    slices: int
    ids: tuple[str, ...]
    shard: np.ndarray   # int64 per ID
    slice: np.ndarray   # int64 per ID

    def __post_init__(self) -> None:
        if self.shards < 1 or self.slices < 1:
            raise ValueError(f"a shard map needs shards >= 1 and slices >= 1, not {self.shards}/{self.slices}")
        if not len(self.ids) == len(self.shard) == len(self.slice):
            raise ValueError("shard map columns differ in length")
        if len(self.ids) and (self.shard.max() >= self.shards or self.slice.max() >= self.slices
                              or self.shard.min() < POOL or self.slice.min() < 0):
            raise ValueError("shard map holds a shard or slice out of range")

    @classmethod
    def assign(cls, ids: Sequence[str], subjects: Sequence[str], shards: int, slices: int,
               pool_fraction: float = 0.0) -> ShardMap:
        """Shard and slice of each sample: stable hashes of its data subject (of the sample ID
        when it has none), so a subject's samples are in one shard and one slice; about
        `pool_fraction` of the subjects go to the shared pool instead."""
        if not 0.0 <= pool_fraction < 1.0:
            raise ValueError(f"pool_fraction must be in [0, 1), not {pool_fraction}")
        keys = [s or i for i, s in zip(ids, subjects, strict=True)]
        shard = np.array([stable_bucket(k, shards, "shard") for k in keys], np.int64)
        pooled = np.array([stable_bucket(k, 1_000_000, "pool") < pool_fraction * 1_000_000 for k in keys], bool)
        shard[pooled] = POOL
        return cls(shards, slices, tuple(ids), shard, np.array([stable_bucket(k, slices, "slice") for k in keys],
                                                                np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, ids: Iterable[str]) -> ShardMap:
        """The map of the samples in `ids` only (order kept)."""
        keep = set(ids)
        mask = np.array([i in keep for i in self.ids], dtype=bool)
        return ShardMap(self.shards, self.slices, tuple(i for i, k in zip(self.ids, mask, strict=True) if k),
                        self.shard[mask], self.slice[mask])

    def removed(self, kept: Iterable[str]) -> dict[int, dict[str, int]]:
        """Per member (`POOL` for the shared pool) that loses samples when only `kept` remains:
        how many, and the first slice."""
        keep = set(kept)
        out: dict[int, dict[str, int]] = {}
        for i, s, r in zip(self.ids, self.shard.tolist(), self.slice.tolist(), strict=True):
            if i not in keep:
                hit = out.setdefault(s, {"removed": 0, "first_slice": r})
                hit["removed"] += 1
                hit["first_slice"] = min(hit["first_slice"], r)
        return dict(sorted(out.items()))

    def members_of(self, ids: Iterable[str]) -> list[int]:
        """The members whose shard holds any of `ids`."""
        want = set(ids)
        return sorted({s for i, s in zip(self.ids, self.shard.tolist(), strict=True) if i in want})

    @property
    def has_pool(self) -> bool:
        return bool((self.shard == POOL).any())

    def member_ids(self, member: int) -> list[str]:
        return [self.ids[k] for k in np.flatnonzero(self.shard == member)]

    def slice_ids(self, member: int, slice_: int) -> list[str]:
        mask = (self.shard == member) & (self.slice == slice_)
        return [self.ids[k] for k in np.flatnonzero(mask)]

    def to_json(self) -> dict[str, Any]:
        return {"shards": self.shards, "slices": self.slices, "key": "sha256 of the subject ID, else the sample ID",
                "ids": list(self.ids), "shard": self.shard.tolist(), "slice": self.slice.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardMap:
        return cls(int(data["shards"]), int(data["slices"]), tuple(data["ids"]),
                   np.asarray(data["shard"], np.int64), np.asarray(data["slice"], np.int64))


@dataclass(frozen=True)
class ShardState:
    """What exact deletion needs beside the members. Immutable: methods replace it, never edit it
    (so a deep copy of the ensemble shares it instead of copying every checkpoint)."""

    map: ShardMap
    checkpoints: Mapping[tuple[int, int], StateDict] = field(default_factory=dict)  # (member, slice) → weights after it
    init: StateDict | None = None  # shared warm start of every member; None = seeded fresh init

    def __deepcopy__(self, memo: dict) -> ShardState:
        return self

    def valid_slices(self, member: int) -> int:
        """How many leading checkpoints of `member` are kept (a resumed training starts after them)."""
        r = 0
        while (member, r) in self.checkpoints:
            r += 1
        return r

    def dropping(self, drops: Mapping[int, int], kept: Iterable[str]) -> ShardState:
        """The state once only `kept` samples remain and each member in `drops` lost its checkpoints
        from that slice on (they were trained on forgotten data). A loss from the pool drops the
        warm start and every checkpoint (all started from it): the next exact retrain rebuilds."""
        if POOL in drops:
            return replace(self, map=self.map.keep(kept), checkpoints={}, init=None)
        checkpoints = {(m, r): w for (m, r), w in self.checkpoints.items() if r < drops.get(m, self.map.slices)}
        return replace(self, map=self.map.keep(kept), checkpoints=checkpoints)

    @property
    def needs_warm_start(self) -> bool:
        """The map has a pool but its warm start was dropped (an approximate method forgot pool samples)."""
        return self.map.has_pool and self.init is None


class ShardedEnsemble(nn.Module):
    """S members of one architecture (`member`: its spec); forward = log of the mean probability."""

    def __init__(self, member: dict[str, Any], shards: int, slices: int = 1) -> None:
        from unlearn_ops.models import build_model  # the members' architectures live in the registry

        super().__init__()
        if shards < 1 or slices < 1:
            raise ValueError(f"a sharded model needs shards >= 1 and slices >= 1, not {shards}/{slices}")
        if member.get("arch") == ARCH:
            raise ValueError("a sharded model's members cannot themselves be sharded")
        self.member_spec, self.slices = dict(member), int(slices)
        self.members = nn.ModuleList(build_model(member) for _ in range(shards))
        self.sharding: ShardState | None = None  # set by training or loading

    @property
    def shards(self) -> int:
        return len(self.members)

    def spec(self) -> dict[str, Any]:
        return {"arch": ARCH, "member": dict(self.member_spec), "shards": self.shards, "slices": self.slices}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    def state(self) -> ShardState:
        if self.sharding is None:
            raise ValueError("this sharded model carries no shard map or checkpoints (loaded for serving only?)")
        return self.sharding

    def with_members(self, new: Mapping[int, nn.Module], sharding: ShardState) -> ShardedEnsemble:
        """A copy with the members in `new` replaced and `sharding` as its state; the others are
        the same tensors, deep-copied (bit-identical)."""
        import copy

        out = copy.deepcopy(self)
        for i, member in new.items():
            out.members[i] = member
        out.sharding = sharding
        return out


# ------------------------------------------------------------------------------ files
def _flat(state: ShardState) -> dict[str, torch.Tensor]:
    flat = {f"member{m}.slice{r}.{k}": v for (m, r), w in state.checkpoints.items() for k, v in w.items()}
    flat.update({f"init.{k}": v for k, v in (state.init or {}).items()})
    return {k: v.detach().cpu().contiguous() for k, v in flat.items()}


def save_state(state: ShardState, directory: str | Path) -> None:
    directory = Path(directory)
    save_file(_flat(state), str(directory / STATE_FILE))
    (directory / MAP_FILE).write_text(json.dumps(state.map.to_json()) + "\n")


def load_state(directory: str | Path) -> ShardState:
    directory = Path(directory)
    missing = [f for f in (MAP_FILE, STATE_FILE) if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} holds a sharded model without {missing}: it cannot be unlearned exactly")
    checkpoints: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    init: dict[str, torch.Tensor] = {}
    for key, value in load_file(str(directory / STATE_FILE)).items():
        head, _, name = key.partition(".")
        if head == "init":
            init[name] = value
            continue
        slice_, _, name = name.partition(".")
        checkpoints.setdefault((int(head.removeprefix("member")), int(slice_.removeprefix("slice"))), {})[name] = value
    return ShardState(ShardMap.from_json(json.loads((directory / MAP_FILE).read_text())), checkpoints, init or None)


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A classifier folder; a sharded one with its shard map and checkpoints (serving needs neither)."""
    from unlearn_ops.models import load_model

    model, spec = load_model(directory, device)
    if isinstance(model, ShardedEnsemble):
        model.sharding = load_state(directory)
    return model, spec


def save_classifier(model: nn.Module, spec: dict[str, Any], directory: str | Path) -> Path:
    """spec.json + model.safetensors; a sharded model's shard map and checkpoints beside them."""
    from unlearn_ops.models import save_model

    out = save_model(model, spec, directory)
    if isinstance(model, ShardedEnsemble):
        save_state(model.state(), out)
    return out
