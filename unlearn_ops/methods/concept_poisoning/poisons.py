"""Image poisons (a donor image's patch pasted where the target concept fires, relabelled) and the
fine-tuning on retain ∪ poisons. Poisons live in memory only: they are never written or returned."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.methods.concept_poisoning import features
from unlearn_ops.methods.concept_poisoning.banks import ConceptBank, box_corner, crop, embed, side_px
from unlearn_ops.methods.concept_poisoning.pcbm import ConceptReport, Donor
from unlearn_ops.training import TrainConfig, fit

if TYPE_CHECKING:
    from unlearn_ops.methods.concept_poisoning import Config


def paste(img: torch.Tensor, patch: torch.Tensor, row: int, col: int) -> torch.Tensor:
    out = img.clone()
    sh, sw = patch.shape[-2:]
    top, left = box_corner(row, sh, img.shape[-2]), box_corner(col, sw, img.shape[-1])
    out[..., top:top + sh, left:left + sw] = patch
    return out



def poison_image(x: torch.Tensor, donor: torch.Tensor, mode: str, target_loc: tuple[int, int],
                 donor_loc: tuple[int, int], cfg: Config, rng: np.random.Generator) -> torch.Tensor:
    """One poisoned image (C×H×W) per the paper's modes; `none` returns `x` unchanged."""
    h, w = x.shape[-2:]
    centre = (h // 2, w // 2)
    if mode == "none":
        return x
    if mode == "localized":
        return paste(x, crop(donor, *donor_loc, side_px(cfg.patch, h)), *target_loc)
    if mode in ("center", "random"):
        patch = crop(donor, *centre, side_px(cfg.center_patch, h))
        where = centre if mode == "center" else (int(rng.integers(0, h)), int(rng.integers(0, w)))
        return paste(x, patch, *where)
    side = side_px(cfg.full_patch, h)  # full: the whole donor image, shrunk, in the middle
    small = F.interpolate(donor[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    return paste(x, small, *centre)


def poison_labels(y: torch.Tensor, donors: dict[int, Donor], mode: str, num_classes: int,
                  rng: np.random.Generator, logits: torch.Tensor | None = None) -> torch.Tensor:
    """One label per poison. `nearest` needs `logits`, the original's on the clean forget images."""
    if mode == "keep":
        return y.clone()
    if mode == "random":  # uniform over all classes: may draw the forgotten class (paper's caveat)
        return torch.from_numpy(rng.integers(0, num_classes, size=len(y)).astype(np.int64))
    # nearest: per image, the kept class the original finds most likely, which is what a model that never learnt
    # the forgotten classes (the donors' keys) would call it (Boundary Shrink's label)
    if mode == "nearest":
        if logits is None:
            raise ValueError("concept_poisoning: labels 'nearest' needs the original's logits on the forget images")
        kept = logits.clone()
        kept[:, sorted(donors)] = float("-inf")
        return kept.argmax(1)
    return torch.tensor([donors[int(c)].donor for c in y.tolist()], dtype=torch.long)


def make_image_poisons(forget: Part, retain: Part, bank: ConceptBank, report: ConceptReport, cfg: Config,
                       num_classes: int, rng: np.random.Generator, logits: torch.Tensor | None = None) -> Part:
    """In-memory poisons (never persisted): one per forget image, donor images from retain."""
    poisons_x = forget.x.clone()
    if cfg.poison != "none":
        target_scores = bank.activations(forget.x) if cfg.poison == "localized" else None
        for t, donor in report.donors.items():
            idx = np.flatnonzero(forget.y.numpy() == t)
            pool = np.flatnonzero(retain.y.numpy() == donor.donor)
            if len(idx) == 0:
                continue
            if len(pool) == 0:
                raise ValueError(f"donor class {donor.donor} has no retained samples to take patches from")
            # a seeded pool of donor images; their concept locations are computed once
            donor_imgs = retain.x[np.sort(rng.choice(pool, size=min(cfg.donor_pool, len(pool)), replace=False))]
            d_scores = bank.activations(donor_imgs) if cfg.poison == "localized" else None
            picks = rng.integers(0, len(donor_imgs), size=len(idx))
            for i, j in zip(idx, picks, strict=True):
                t_loc = ((int(target_scores.rows[i, donor.target_concept]), int(target_scores.cols[i, donor.target_concept]))
                         if target_scores is not None else (0, 0))
                d_loc = ((int(d_scores.rows[j, donor.donor_concept]), int(d_scores.cols[j, donor.donor_concept]))
                         if d_scores is not None else (0, 0))
                poisons_x[i] = poison_image(forget.x[i], donor_imgs[j], cfg.poison, t_loc, d_loc, cfg, rng)
    labels = poison_labels(forget.y, report.donors, cfg.labels, num_classes, rng, logits)
    return Part(tuple(f"poison/{i:06d}" for i in range(len(forget))), poisons_x, labels)


def poison_sources(forget: Part, cfg: Config) -> Part:
    """The forget samples that get a poison. With `retain_per_class`, each forgotten class gets
    as many poisons as each retained class has samples: the fine-tuning set keeps the original
    class balance (the paper's "integrity" cuts every class alike). `max_poisons` caps the total."""
    chosen = forget.per_class(cfg.retain_per_class, cfg.seed + 8)
    return chosen.sample(cfg.max_poisons, cfg.seed)


def retained_sources(retain: Part, cfg: Config) -> Part:
    """The retained samples of the fine-tuning set: at most `retain_per_class` per class."""
    return retain.per_class(cfg.retain_per_class, cfg.seed + 1)


# trainable=features caches the frozen convolutions' output when the fine-tuning set has at most this
# many rows (SmallCNN on Fashion-MNIST: 9 216 floats = 36 KiB a row, 20 000 rows = 0.7 GiB)
CACHE_ROWS = 20_000


def _trainable_params(model: nn.Module, trainable: str) -> list[nn.Parameter]:
    if trainable == "all":
        return list(model.parameters())
    if trainable == "features":
        return features.feature_params(model)
    params = list(model.head.parameters())
    if trainable == "last":
        if not hasattr(model, "last_layer"):
            raise NotApplicable("concept_poisoning: trainable=last needs a text model (head + last encoder block); "
                                "use head or all")
        params += list(model.last_layer.parameters())
    return params


def finetune(model: nn.Module, retain: Part, poisons: Part, cfg: Config, device: torch.device,
             logs: list[str]) -> None:
    """Cross-entropy on retain ∪ poisons, in place. With `head`, the frozen body's embeddings are
    computed once (in memory) and only the Linear head trains on them: same result, far cheaper;
    `features` does the same with the frozen convolutions of a SmallCNN (`features.frozen_split`).
    `head_epochs` then trains the head alone on the new embeddings."""
    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                            seed=cfg.seed, device=str(device))
    if cfg.trainable == "head":
        fit(model.head, _embedded(model, retain, poisons, device), train_cfg, progress=logs.append)
        return
    embedded = _fit_body(model, retain.concat(poisons), cfg, train_cfg, device, logs)
    if cfg.head_epochs:
        if embedded is None:
            embedded = _embedded(model, retain, poisons, device)
        fit(model.head, embedded, replace(train_cfg, epochs=cfg.head_epochs), progress=logs.append)


def _embedded(model: nn.Module, retain: Part, poisons: Part, device: torch.device) -> Part:
    """retain ∪ poisons as the head's inputs (the model's embeddings), targets kept."""
    return Part(retain.ids + poisons.ids, torch.cat([embed(model, retain.x, device), embed(model, poisons.x, device)]),
                torch.cat([retain.y, poisons.y]))


def _fit_body(model: nn.Module, data: Part, cfg: Config, train_cfg: TrainConfig, device: torch.device,
              logs: list[str]) -> Part | None:
    """Trains the `trainable` part of the body and the head on `data`. Returns the head's new
    inputs when a head pass follows and they come almost free (the cached convolutions' path), else None."""
    split = features.frozen_split(model) if cfg.trainable == "features" else None
    if split is not None and len(data) <= CACHE_ROWS:
        bottom, tail = split
        model.eval()
        cached = features.bottom_outputs(bottom, data.x, device)
        fit(tail, Part(data.ids, cached, data.y), train_cfg, progress=logs.append)
        model.eval()
        if not cfg.head_epochs:  # nobody reads them
            return None
        # the tail ends with the head: the rest of it turns the cached outputs into the head's inputs
        return Part(data.ids, features.bottom_outputs(tail[:-1], cached, device), data.y)
    keep = {id(p) for p in _trainable_params(model, cfg.trainable)}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        fit(model, data, train_cfg, progress=logs.append)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return None
