"""Report PNGs are written from numbers only."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tests.conftest import FORGET_CLASS
from unlearn_ops.verify.report import (
    image_png,
    loss_histograms_png,
    patch_grid,
    per_class_accuracy_png,
    report_pngs,
    roc_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and min(Image.open(path).size) > 100


def test_each_plot_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    labels, scores = np.r_[np.ones(200), np.zeros(200)], np.r_[rng.normal(1, 1, 200), rng.normal(0, 1, 200)]
    assert is_png(roc_png(labels, scores, tmp_path / "roc.png"))
    assert is_png(roc_png(labels, scores, tmp_path / "roc_log.png", log_scale=True))
    losses = {"forget": rng.exponential(0.01, 50), "retain": rng.exponential(0.01, 500),
              "test": rng.exponential(0.3, 300)}
    assert is_png(loss_histograms_png(losses, tmp_path / "only_after.png"))
    out = per_class_accuracy_png({"original": rng.uniform(0.8, 1, 10), "unlearned": np.r_[rng.uniform(0.8, 1, 9), 0.0]},
                                 tmp_path / "sub" / "bars.png", forget_classes=[9])
    assert out == tmp_path / "sub" / "bars.png" and is_png(out)


def test_report_for_a_model(tiny_model, class_retrained, class_splits, tmp_path):
    paths = report_pngs(class_retrained, class_splits, tmp_path, original=tiny_model, retrained=class_retrained,
                        forget_classes=[FORGET_CLASS])
    assert set(paths) == {"roc", "loss_hist", "per_class"}
    assert all(is_png(p) for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # nothing else


def test_patch_grid_lays_out_rows_with_gaps_and_enlarges_by_repetition(tmp_path):
    patches = [[torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 0.2)], [torch.full((1, 2, 2), 0.3)]]
    grid = patch_grid(patches, side=2, scale=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1)
    assert np.allclose(grid[1:3, 1:3], 0.1) and np.allclose(grid[1:3, 4:6], 0.2) and np.allclose(grid[4:6, 1:3], 0.3)
    assert np.allclose(grid[0], 1.0) and np.allclose(grid[4:6, 4:6], 1.0)  # gaps and missing cells stay white
    big = patch_grid(patches, side=2, scale=3)
    assert big.shape == (21, 21) and np.allclose(big[3:9, 3:9], 0.1)
    rgb = patch_grid([[torch.rand(3, 2, 2)]], side=2, scale=1)
    assert rgb.shape == (4, 4, 3)
    path = image_png(grid.repeat(40, 0).repeat(40, 1), tmp_path / "sub" / "grid.png")
    assert is_png(path)
