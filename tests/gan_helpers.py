"""Tiny MNIST GAN fixtures shared by the GAN test modules (built once per test process).

A few hundred real MNIST-5k images of the digits 0 and 1 (two clearly different shapes, so even a
GAN trained for seconds makes both), a narrow DCGAN trained on them, and a small reference
classifier for the two digits, attached to the GAN as the build does.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from tests.conftest import fixture_seed
from unlearn_ops.data.sources import load_mnist5k
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.models import build_model
from unlearn_ops.models.gan import GAN, GanTrainConfig, init_weights, train_gan
from unlearn_ops.training import TrainConfig, fit

DIGITS = (0, 1)               # label 0 = digit 0, label 1 = digit 1
FORGET_CLASS = 1
TINY_GAN = {"z_dim": 16, "g_width": 16, "d_width": 16}
TINY_GAN_TRAIN = GanTrainConfig(epochs=20, batch_size=32, lr_g=2e-3, lr_d=5e-4, seed=fixture_seed(), device="cpu")
TINY_REF = {"arch": "cnn", "in_channels": 1, "num_classes": len(DIGITS), "image_size": 28,
            "widths": [4, 8], "hidden": 16}


def _part(split: str, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> Part:
    ids = tuple(f"mnist5k/{split}/{r:06d}" for r in rows)
    return Part(ids, torch.from_numpy(x[rows].astype(np.float32) / 255.0), torch.from_numpy(y[rows].copy()))


@lru_cache(maxsize=1)
def digits01() -> dict[str, Part]:
    """train: 300 images (150 per digit); test and nonmember: 100 each, from the held-out split."""
    raw = load_mnist5k()
    parts = {}
    for split, sizes in (("train", {"train": 150}), ("test", {"test": 50, "nonmember": 50})):
        x, y = raw.splits[split]
        rng = np.random.default_rng(0)
        rows_by_name: dict[str, list[int]] = {name: [] for name in sizes}
        for digit in DIGITS:
            rows = rng.permutation(np.flatnonzero(y == digit))
            start = 0
            for name, k in sizes.items():
                rows_by_name[name] += rows[start:start + k].tolist()
                start += k
        for name, rows in rows_by_name.items():
            rows = np.sort(np.asarray(rows))
            labels = np.searchsorted(DIGITS, y[rows])  # digit -> label index
            part = _part(split, x, y, rows)
            parts[name] = Part(part.ids, part.x, torch.from_numpy(labels.astype(np.int64)))
    return parts


@lru_cache(maxsize=1)
def reference_classifier() -> torch.nn.Module:
    torch.manual_seed(fixture_seed())
    model = build_model(TINY_REF)
    return fit(model, digits01()["train"], TrainConfig(epochs=3, lr=3e-3, batch_size=32, seed=fixture_seed(),
                                                       device="cpu"))


@lru_cache(maxsize=1)
def tiny_gan() -> GAN:
    """The tiny GAN, trained on all 300 images, with the reference classifier attached."""
    gan = init_weights(GAN(**TINY_GAN), fixture_seed())
    train_gan(gan.generator, gan.discriminator, digits01()["train"].x, TINY_GAN_TRAIN)
    return gan.attach_reference(reference_classifier(), TINY_REF)


def splits_for(forget_ids: list[str] | tuple[str, ...]) -> Splits:
    d = digits01()
    train = d["train"]
    drop = set(forget_ids)
    mask = np.array([i in drop for i in train.ids])
    return Splits(forget=train.where(mask), retain=train.where(~mask), test=d["test"], nonmember=d["nonmember"],
                  num_classes=len(DIGITS))


def class_splits() -> Splits:
    train = digits01()["train"]
    return splits_for([i for i, y in zip(train.ids, train.y.tolist(), strict=True) if y == FORGET_CLASS])


def item_splits(n: int = 32, seed: int = 0) -> Splits:
    train = digits01()["train"]
    return splits_for(train.sample(n, seed).ids)
