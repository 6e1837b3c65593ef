"""Which non-member images neuron_perturbation uses, and their head inputs split by role.

One forward pass covers every image used; the rows are chosen first and the images copied once
(the pool can hold thousands of images). Order in that pass: per forgotten class its analysis
images, then per class its check images, then the repair images of the other classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import NotApplicable

if TYPE_CHECKING:
    from unlearn_ops.methods.neuron_perturbation import Config


@dataclass(frozen=True)
class NonmemberRows:
    """Rows of the non-member pool: per forgotten class n_a analysis and up to n_check *other*
    check images (stopping rule / repair only), plus repair_n images of every other class (repair only)."""

    classes: list[int]
    analysis: dict[int, np.ndarray]
    check: dict[int, np.ndarray]
    repair: np.ndarray

    @property
    def all(self) -> np.ndarray:
        """Every row, in the order of the forward pass."""
        return np.concatenate([self.analysis[c] for c in self.classes] + [self.check[c] for c in self.classes]
                              + [self.repair])


def nonmember_rows(splits: Splits, classes: list[int], cfg: Config) -> NonmemberRows:
    """Seeded per class (seed + 1000·c for a forgotten class c, seed + k for another class k)."""
    y = splits.nonmember.y.numpy()
    analysis, check = {}, {}
    n_check = cfg.n_check if cfg.stop_accuracy is not None or cfg.repair_steps else 0
    for c in classes:
        rows = np.flatnonzero(y == c)
        if len(rows) == 0:
            raise NotApplicable(f"neuron_perturbation: the non-member pool has no image of class {c}")
        order = np.random.default_rng(cfg.seed + 1000 * c).permutation(len(rows))
        analysis[c] = np.sort(rows[order[:cfg.n_a]])
        check[c] = np.sort(rows[order[cfg.n_a:cfg.n_a + n_check]])
    repair_rows = []
    if cfg.repair_steps:
        for k in sorted(set(y.tolist()) - set(classes)):
            rows = np.flatnonzero(y == k)
            repair_rows.append(np.sort(rows[np.random.default_rng(cfg.seed + k).permutation(len(rows))[:cfg.repair_n]]))
    return NonmemberRows(classes, analysis, check,
                         np.concatenate(repair_rows) if repair_rows else np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class RoleActs:
    """Head inputs of the rows of `NonmemberRows.all`, and views of them by role."""

    all: torch.Tensor
    analysis: dict[int, torch.Tensor]      # per forgotten class: its analysis images
    check: dict[int, torch.Tensor]         # per forgotten class: its check images
    own: dict[int, torch.Tensor]           # per forgotten class: indices into `all` of both
    n_own: int                             # rows of the forgotten classes; the repair images follow

    @classmethod
    def split(cls, acts: torch.Tensor, rows: NonmemberRows) -> RoleActs:
        classes, n = rows.classes, len(rows.classes)
        offsets = np.cumsum([0] + [len(rows.analysis[c]) for c in classes] + [len(rows.check[c]) for c in classes])
        analysis = {c: acts[offsets[i]:offsets[i + 1]] for i, c in enumerate(classes)}
        check = {c: acts[offsets[n + i]:offsets[n + i + 1]] for i, c in enumerate(classes)}
        own = {c: torch.cat([torch.arange(offsets[i], offsets[i + 1]), torch.arange(offsets[n + i], offsets[n + i + 1])])
               for i, c in enumerate(classes)}
        return cls(acts, analysis, check, own, int(offsets[-1]))
