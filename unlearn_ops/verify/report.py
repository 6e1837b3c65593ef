"""Verification plots as PNG files: an attack's ROC curve, loss histograms (forget / retain /
test, before and after), per-class accuracy bars; and image-patch grids (`patch_grid`, `image_png`).

Each plot function takes numbers (never samples) and an output path, and returns the path, so no
forget-set content can end up in an artifact. The patch grid is the exception: it shows the image
patches it is given, pixel for pixel, so its caller chooses them (concept_poisoning passes patches of
non-member and retained images only). Figures are built with `matplotlib.figure.Figure`
(the Agg canvas, no pyplot): no GUI backend, no global state, safe in worker threads.
`report_pngs` computes the numbers for one model and writes all three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import image as mpimage
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.training import per_class_accuracy, per_sample_loss
from unlearn_ops.verify.mia import matched_nonmembers

PART_COLOURS = {"forget": "tab:red", "retain": "tab:blue", "test": "tab:green", "nonmember": "tab:olive"}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def roc_png(labels: np.ndarray, scores: np.ndarray, path: str | Path, title: str = "membership attack",
            log_scale: bool = False) -> Path:
    """ROC of an attack (labels 1 = member / unlearned; higher score = member). `log_scale` draws
    log-log axes, where the low-FPR region that per-example attacks are judged on is visible."""
    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:red", label=f"attack (AUC {auc:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], color="grey", linestyle="--", label="chance")
    if log_scale:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(max(1e-4, 0.5 / max(1, (labels == 0).sum())), 1)
        ax.set_ylim(1e-4, 1)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _save(fig, path)


LOSS_FLOOR = 1e-7  # float32 cross-entropy of a confident correct prediction is ~0; shown as "≤ 1e-7"


def loss_histograms_png(after: Mapping[str, np.ndarray], path: str | Path,
                        before: Mapping[str, np.ndarray] | None = None, bins: int = 40) -> Path:
    """Per-sample cross-entropy per part ({"forget": losses, "retain": …, "test": …}), after
    unlearning and, if given, before it. The x axis is log10(loss) (losses span decades), shared
    bins; the y axis is the share of each part's samples, so parts of any size compare."""
    panels = [("before", before), ("after", after)] if before is not None else [("after", after)]
    logs = {(name, part): np.log10(np.maximum(np.asarray(v, dtype=float), LOSS_FLOOR))
            for name, d in panels for part, v in d.items()}
    everything = np.concatenate(list(logs.values()))
    edges = np.linspace(np.log10(LOSS_FLOOR), max(everything.max(), 0.0) + 1e-9, bins + 1)
    fig = Figure(figsize=(5 * len(panels), 3.6))
    for i, (name, data) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, sharey=fig.axes[0] if fig.axes else None)
        for part in data:
            values = logs[(name, part)]
            ax.hist(values, bins=edges, weights=np.full(len(values), 1 / max(1, len(values))), histtype="step",
                    linewidth=1.5, color=PART_COLOURS.get(part), label=f"{part} (n={len(values)})")
        ax.set_xlabel("log10 per-sample cross-entropy (left edge: ≤ 1e-7)")
        ax.set_ylabel("share of samples")
        ax.set_title(f"loss, {name} unlearning")
        ax.legend(fontsize=8)
    return _save(fig, path)


def per_class_accuracy_png(accuracies: Mapping[str, Sequence[float]], path: str | Path,
                           class_names: Sequence[str] | None = None,
                           forget_classes: Sequence[int] = ()) -> Path:
    """Grouped bars: one group per class, one bar per model ({"original": [...], "unlearned":
    [...], "retrain": [...]}); forgotten classes are marked with a shaded background."""
    names = list(accuracies)
    n_classes = len(next(iter(accuracies.values())))
    labels = list(class_names) if class_names else [str(c) for c in range(n_classes)]
    width = 0.8 / max(1, len(names))
    fig = Figure(figsize=(max(6, 0.7 * n_classes + 2), 3.8))
    ax = fig.add_subplot()
    for c in forget_classes:
        ax.axvspan(c - 0.45, c + 0.45, color="tab:red", alpha=0.12, linewidth=0)
    x = np.arange(n_classes)
    for i, name in enumerate(names):
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(np.asarray(accuracies[name], dtype=float)), width,
               label=name)
    ax.set_xticks(x, labels, rotation=30 if max(len(s) for s in labels) > 3 else 0, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("per-class test accuracy" + (" (shaded: forgotten)" if len(forget_classes) else ""))
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def part_losses(model: nn.Module, splits: Splits) -> dict[str, np.ndarray]:
    return {name: per_sample_loss(model, getattr(splits, name)).numpy() for name in ("forget", "retain", "test")}


def report_pngs(model: nn.Module, splits: Splits, out_dir: str | Path, *, original: nn.Module | None = None,
                retrained: nn.Module | None = None, class_names: Sequence[str] | None = None,
                forget_classes: Sequence[int] = ()) -> dict[str, Path]:
    """The three plots for one unlearned model: ROC of the loss MIA (forget vs non-members of the
    same classes), loss histograms (before = `original`), per-class test accuracy bars."""
    out = Path(out_dir)
    forget_loss = per_sample_loss(model, splits.forget).numpy()
    nonmember_loss = per_sample_loss(model, matched_nonmembers(splits.forget, splits.nonmember)).numpy()
    labels = np.r_[np.ones(len(forget_loss)), np.zeros(len(nonmember_loss))]
    paths = {"roc": roc_png(labels, -np.r_[forget_loss, nonmember_loss], out / "mia_loss_roc.png",
                            title="loss MIA: forget vs non-members")}
    paths["loss_hist"] = loss_histograms_png(part_losses(model, splits), out / "loss_histograms.png",
                                             before=part_losses(original, splits) if original is not None else None)
    models = {"original": original, "unlearned": model, "retrain": retrained}
    accs = {k: per_class_accuracy(m, splits.test, splits.num_classes) for k, m in models.items() if m is not None}
    paths["per_class"] = per_class_accuracy_png(accs, out / "per_class_accuracy.png", class_names, forget_classes)
    return paths


def patch_grid(patches: Sequence[Sequence[torch.Tensor]], side: int, scale: int = 4) -> np.ndarray:
    """H × W (× 3) array in [0, 1]: row k = `patches[k]` (C × side × side each) at 1:1 with 1-px
    gaps, then enlarged `scale`× by pixel repetition (no interpolation: what a human sees is the data)."""
    channels = next(p for row in patches for p in row).shape[0]
    n = max(len(row) for row in patches)
    cell = side + 1
    grid = np.ones((channels, len(patches) * cell + 1, n * cell + 1), dtype=np.float32)
    for k, row in enumerate(patches):
        for j, p in enumerate(row):
            grid[:, 1 + k * cell: 1 + k * cell + side, 1 + j * cell: 1 + j * cell + side] = p.numpy()
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if channels == 1 else np.transpose(grid[:3], (1, 2, 0))


def image_png(grid: np.ndarray, path: str | Path) -> Path:
    """An array in [0, 1] (H × W grey or H × W × 3) as a PNG, one pixel per value (no pyplot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimage.imsave(path, np.clip(grid, 0, 1), cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    return path
