"""`Part.sample`, `Part.per_class` and the class questions `Splits` answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_ops.data.splits import Part, Splits


def part(labels: list[int], prefix: str) -> Part:
    y = torch.tensor(labels)
    return Part(tuple(f"{prefix}/{i}" for i in range(len(y))), torch.arange(len(y), dtype=torch.float32)[:, None], y)


def test_sample_is_a_seeded_subset_in_original_order_and_no_cap_returns_the_part():
    p = part([i % 3 for i in range(50)], "p")
    a, b, c = p.sample(10, 0), p.sample(10, 0), p.sample(10, 1)
    assert len(a) == 10 and a.ids == b.ids and a.ids != c.ids
    assert list(a.ids) == sorted(a.ids, key=p.ids.index)  # original order
    # the draw the methods and the benchmarks were tuned with: the first n of one seeded permutation
    assert a.ids == tuple(p.ids[i] for i in np.sort(np.random.default_rng(0).permutation(50)[:10]))
    for n in (0, -1, 50, 80):  # no cap, or nothing to cut
        assert p.sample(n, 0) is p


def test_per_class_caps_every_class_with_one_generator():
    p = part([0] * 10 + [1] * 3 + [2] * 7, "p")
    q = p.per_class(4, 5)
    assert np.bincount(q.y.numpy()).tolist() == [4, 3, 4]
    assert list(q.ids) == sorted(q.ids, key=p.ids.index)
    rng = np.random.default_rng(5)  # classes ascending, one generator: the draws concept_poisoning was tuned with
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(p.y.numpy() == c))[:4] for c in (0, 1, 2)]))
    assert q.ids == tuple(p.ids[i] for i in keep)
    assert p.per_class(0, 5) is p and p.per_class(-3, 5) is p
    assert len(part([], "e").per_class(4, 0)) == 0


@pytest.mark.parametrize("forget,retain,present,removed,whole", [
    ([3, 3, 3], [0, 1, 2], [3], [3], True),              # a whole class
    ([3, 5, 5], [0, 1, 2], [3, 5], [3, 5], True),        # two whole classes
    ([3, 1], [0, 1, 2], [1, 3], [3], False),             # class 3 plus an item of class 1
    ([1, 2], [0, 1, 2], [1, 2], [], False),              # items only
    ([], [0, 1], [], [], False),                         # nothing to forget
    ([2, 2], [], [2], [2], True),                        # nothing retained
])
def test_forget_and_removed_classes(forget, retain, present, removed, whole):
    s = Splits(part(forget, "f"), part(retain, "r"), part([0], "t"), part([0], "n"), 6)
    assert s.forget_classes == present
    assert s.removed_classes == removed
    assert s.is_class_deletion is whole
