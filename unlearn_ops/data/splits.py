"""`Part` (IDs + tensors) and `Splits` (forget / retain / test / nonmember), the input of every method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


@dataclass(frozen=True)
class Part:
    """Samples with their stable IDs. `x` is a float tensor (images) or a str array (text)."""

    ids: tuple[str, ...]
    x: Any
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.x) == len(self.y)):
            raise ValueError(f"Part sizes disagree: {len(self.ids)} ids, {len(self.x)} x, {len(self.y)} y")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int] | torch.Tensor) -> Part:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        x = self.x[idx] if isinstance(self.x, torch.Tensor) else self.x[idx.numpy()]
        return Part(tuple(self.ids[i] for i in idx.tolist()), x, self.y[idx])

    def where(self, mask: torch.Tensor | np.ndarray) -> Part:
        return self.subset(np.flatnonzero(np.asarray(mask)))

    def sample(self, n: int, seed: int) -> Part:
        """A seeded random subset of n samples, in their original order; the part itself when it
        holds no more than n, or when n <= 0 (no cap)."""
        if n <= 0 or len(self) <= n:
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))

    def per_class(self, n: int, seed: int) -> Part:
        """At most n samples of each class (one seeded generator, classes in ascending order), in
        their original order; the part itself when n <= 0 (no cap)."""
        if n <= 0 or len(self) == 0:
            return self
        rng = np.random.default_rng(seed)
        y = self.y.numpy()
        keep = [rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)]
        return self.subset(np.sort(np.concatenate(keep)))

    def concat(self, other: Part) -> Part:
        x = torch.cat([self.x, other.x]) if isinstance(self.x, torch.Tensor) else np.concatenate([self.x, other.x])
        return Part(self.ids + other.ids, x, torch.cat([self.y, other.y]))

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size, shuffle=shuffle, generator=gen)


@dataclass(frozen=True)
class Splits:
    """What a method may see. The four parts are disjoint by ID (checked on construction)."""

    forget: Part
    retain: Part
    test: Part
    nonmember: Part
    num_classes: int

    def __post_init__(self) -> None:
        parts = {"forget": self.forget, "retain": self.retain, "test": self.test, "nonmember": self.nonmember}
        seen: dict[str, str] = {}
        for name, part in parts.items():
            for i in part.ids:
                if i in seen:
                    raise ValueError(f"sample {i} is in both {seen[i]} and {name}: splits must be disjoint")
                seen[i] = name

    @property
    def forget_classes(self) -> list[int]:
        """Classes present in the forget set (whether or not the retain set still holds them)."""
        return sorted(set(self.forget.y.tolist()))

    @property
    def removed_classes(self) -> list[int]:
        """Classes present in the forget set and absent from the retain set: the classes this
        deletion removes from the model's training data."""
        kept = set(torch.unique(self.retain.y).tolist()) if len(self.retain) else set()
        return [c for c in self.forget_classes if c not in kept]

    @property
    def is_class_deletion(self) -> bool:
        """A non-empty forget set made of whole classes: every class in it is removed."""
        return len(self.forget) > 0 and self.removed_classes == self.forget_classes
