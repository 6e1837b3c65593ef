"""`concept_poisoning`: class (and entity) unlearning by concept inference and data poisoning.

Paper: W. Chang, T. Zhu, H. Xu, W. Liu, W. Zhou, "Class Machine Unlearning for Complex Data via
Concepts Inference and Data Poisoning", arXiv 2405.15662 (2024); our own reimplementation (official
code MIT, ChangWenhan/Concept_Inference_Unlearn_official). Images: concepts from the model's own
conv features (`banks`), a concept bottleneck with IntegratedGradients and the paper's donor rule
(`pcbm`), donor patches pasted where the target concept fires and relabelled, then fine-tuning on
retain ∪ poisons (`poisons`). Text: words as concepts, LayerIntegratedGradients masking (`text`).
Everything that describes concepts comes from non-member ∪ retained samples; poisons exist only
in memory during the call. Algorithm, design choices, privacy and results: docs/methods/concept_poisoning.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import NotApplicable, UnlearnResult, check_choices, check_positive, fresh_copy
from unlearn_ops.methods.concept_poisoning.banks import PrototypeBank, concept_examples, concept_patches, side_px
from unlearn_ops.methods.concept_poisoning.features import class_units, reset_units
from unlearn_ops.methods.concept_poisoning.pcbm import analysis_part, infer_concepts
from unlearn_ops.methods.concept_poisoning.poisons import (
    finetune,
    make_image_poisons,
    poison_sources,
    retained_sources,
)
from unlearn_ops.methods.concept_poisoning.text import TEXT_POISON_MODES, unlearn_text
from unlearn_ops.training import OPTIMIZERS, predict_logits
from unlearn_ops.utils import resolve_device
from unlearn_ops.verify.report import image_png, patch_grid

POISON_MODES = ("localized", "center", "random", "full", "none")
LABEL_MODES = ("targeted", "random", "nearest", "keep")
IMPORTANCE = ("ig", "weight")
TRAINABLE = ("head", "features", "last", "all")
GRID_SCALE = 4  # the concept grid's patches are enlarged 4× by pixel repetition (row k = concept k)

EXACT = False
# Request kinds this method can serve: it forgets a class (or a concept group of texts), not chosen
# samples — on a random item deletion it would poison the items' classes (benchmarks skip it there).
REQUEST_KINDS: tuple[str, ...] = ("class", "concept")


@dataclass(frozen=True)
class Config:
    # --- concept inference (images and text)
    n_concepts: int = 32            # images: k-means prototypes in the model-derived concept bank
    layer: str = "auto"             # images: module whose N×C×H×W output defines concepts; auto = last with ≥2×2 locations
    analysis_per_class: int = 300   # samples per class from non-member ∪ retain (never forget) for bank, PCBM and IG
    kmeans_points: int = 20000      # images: spatial feature vectors sampled for k-means (cost, not quality, bound)
    top_concepts: int = 5           # M: concepts per class reported and searched by the confusion rule (paper: top-5)
    importance: str = "ig"          # concept ranking: ig (class-mean IntegratedGradients on the PCBM) | weight (paper code)
    pcbm_alpha: float = 1e-5        # PCBM elastic-net strength (paper: SGDClassifier alpha=1e-5)
    pcbm_l1_ratio: float = 0.99     # PCBM L1 share (paper: 0.99, sparse concept weights)
    pcbm_max_iter: int = 10000      # PCBM SGD epochs at most (paper: 10000; stops earlier at tol)
    pcbm_ig_steps: int = 8          # IG steps on the PCBM head: exact at any count since the head is linear
    ig_steps: int = 32              # text: LayerIntegratedGradients steps on the token embeddings (paper: 32)
    examples_per_concept: int = 8   # images: example patches per concept in the PNG grid (non-forget samples only)
    example_patch: float = 0.43     # images: side share of those example patches (context for the human who names them)
    report_dir: str = ""            # images: folder for the concept patch grid PNG; "" = none drawn (production:
                                    # the grid holds crops of retained images, which a later deletion must reach)
    # --- poisons
    poison: str = "localized"       # images: localized|center|random|full|none; text: localized (LIG mask)|random|none
    labels: str = "targeted"        # targeted (donor class) | random (uniform over all classes) | nearest (images: the
                                    # kept class the original finds most likely, per image) | keep (control)
    patch: float = 0.29             # localized patch side as a share of the image side (paper: 64 of 224 px)
    center_patch: float = 0.43      # center / random modes: donor-centre patch side share (paper: 96 of 224 px)
    full_patch: float = 0.71        # full mode: side share the whole donor image is resized to (paper: 160 of 224)
    max_poisons: int = 0            # poison at most this many forget samples in all (0 = no cap); text IG: 32 passes each
    donor_pool: int = 256           # images: retained donor-class images the patches are cut from (located once)
    mask_top_k: int = 5             # text: tokens masked per snippet, top by LayerIntegratedGradients (paper: k=5)
    mask_concepts: bool = True      # text: also mask the words of the snippet's class's top concepts
    text_bank_size: int = 200       # text: the bank = most frequent content words of non-member ∪ retain texts
    text_concepts: tuple[str, ...] = ()  # text: explicit bank words/phrases instead of the frequent words
    # --- fine-tuning on retain ∪ poisons
    trainable: str = "head"         # head (paper) | features (head + last feature block) | all (images); text: head | last | all
    reset_units: float = 0.0        # images: share of penultimate units most attributed (IG) to the forgotten class,
                                    # re-initialised before fine-tuning (needs trainable features|all; 0 = none)
    retain_per_class: int = 500     # samples per class in the fine-tuning set, retained and poisoned alike; 0 = all
    epochs: float = 3               # passes over retain ∪ poisons (fractional allowed)
    head_epochs: float = 0          # trainable features|all: then this many passes of the head alone over the new
                                    # embeddings (cheap: the body runs once), so the head catches up with the features
    lr: float = 1e-3                # learning rate
    batch_size: int = 128           # batch size
    optimizer: str = "adam"         # adam | sgd (paper: sgd, momentum 0.9, lr 1e-3, batch 32)
    seed: int = 0                   # k-means, PCBM, donor images, random labels/positions, data order

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_concepts", tuple(str(c) for c in self.text_concepts))
        check_choices(self, {"poison": POISON_MODES, "labels": LABEL_MODES, "importance": IMPORTANCE,
                             "trainable": TRAINABLE, "optimizer": OPTIMIZERS})
        for name in ("patch", "center_patch", "full_patch", "example_patch"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"concept_poisoning: {name} is a share of the image side, in (0, 1]")
        if not 0 <= self.reset_units < 1:
            raise ValueError("concept_poisoning: reset_units is a share of the penultimate units, in [0, 1)")
        if self.reset_units and self.trainable not in ("features", "all"):
            raise ValueError("concept_poisoning: reset_units needs trainable features or all (the reset units must "
                             "be relearned from retain ∪ poisons)")
        if self.head_epochs < 0 or (self.head_epochs and self.trainable not in ("features", "all")):
            raise ValueError("concept_poisoning: head_epochs is a pass count >= 0, for trainable features or all")
        if self.top_concepts < 1 or self.n_concepts < 2:
            raise ValueError("concept_poisoning: need top_concepts >= 1 and n_concepts >= 2")
        check_positive(self, "analysis_per_class", "kmeans_points", "pcbm_max_iter", "pcbm_ig_steps", "ig_steps",
                       "examples_per_concept", "donor_pool", "text_bank_size", "epochs", "lr", "batch_size")


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    """Images (a classifier with `embed`/`head`) or text (`TextClassifier`): see the module doc."""
    from unlearn_ops.models.text import TextClassifier

    is_text = isinstance(model, TextClassifier)
    _check_applies(model, cfg, is_text)
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev).eval()
    rng = np.random.default_rng(cfg.seed)  # donor images, random labels, positions and masks
    targets, gone = splits.forget_classes, set(splits.removed_classes)  # donors: classes the model keeps
    details, logs = (unlearn_text if is_text else unlearn_images)(new, splits, cfg, dev, rng, targets, gone)
    return UnlearnResult(new, "concept_poisoning", details=details, log=logs)


def _check_applies(model: nn.Module, cfg: Config, is_text: bool) -> None:
    if is_text:
        if cfg.trainable == "features" or cfg.reset_units:
            raise NotApplicable("concept_poisoning: trainable=features and reset_units are image settings; text "
                                "uses trainable=last (head + last encoder block)")
        if cfg.labels == "nearest":
            raise NotApplicable("concept_poisoning: labels=nearest is one of the image settings; text poisons take the donor "
                                "or random labels")
        if cfg.poison not in TEXT_POISON_MODES:
            raise NotApplicable(f"concept_poisoning: poison={cfg.poison!r} is an image mode; text uses "
                                f"{TEXT_POISON_MODES}")
        return
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise NotApplicable(f"concept_poisoning needs a classifier with `embed` and a Linear `head`, "
                            f"not {type(model).__name__}")
    if cfg.trainable == "last":
        raise NotApplicable("concept_poisoning: trainable=last is for text models; images use head, features or all")


def unlearn_images(new: nn.Module, splits: Splits, cfg: Config, dev: torch.device, rng: np.random.Generator,
                   targets: list[int], gone: set[int]) -> tuple[dict[str, Any], list[str]]:
    """The image method, in place on `new`. Returns the details and the log."""
    logs: list[str] = []
    timings: dict[str, float] = {}
    start = time.perf_counter()
    analysis = analysis_part(splits, cfg.analysis_per_class, cfg.seed)
    bank, scores = PrototypeBank.fit(new, analysis.x, n_concepts=cfg.n_concepts, n_points=cfg.kmeans_points,
                                     seed=cfg.seed, device=dev, layer=cfg.layer)
    report = infer_concepts(scores.scores, analysis.y, bank.names, splits.num_classes, targets, gone, cfg)
    timings["concepts"] = time.perf_counter() - start

    start = time.perf_counter()
    examples = concept_examples(scores, cfg.examples_per_concept)
    cell = side_px(cfg.example_patch, analysis.x.shape[-2])
    grid_path = None
    if cfg.report_dir:
        grid_path = image_png(patch_grid(concept_patches(analysis.x, scores, examples, cell), cell, GRID_SCALE),
                              Path(cfg.report_dir) / "concept_patches.png")
    timings["report"] = time.perf_counter() - start

    start = time.perf_counter()
    forget = poison_sources(splits.forget, cfg)
    retain = retained_sources(splits.retain, cfg)
    logits = predict_logits(new, forget.x) if cfg.labels == "nearest" else None  # `new` is still the original
    poisons = make_image_poisons(forget, splits.retain, bank, report, cfg, splits.num_classes, rng, logits)
    timings["poisons"] = time.perf_counter() - start

    start = time.perf_counter()
    reset = _reset_class_units(new, analysis, targets, cfg, dev)
    finetune(new, retain, poisons, cfg, dev, logs)
    del poisons  # the only copy of forget-derived images: gone with this frame
    timings["finetune"] = time.perf_counter() - start

    details = {**report.as_details(targets), "bank": "prototypes", "layer": bank.layer,
               "forget_classes": targets, "classes_removed": sorted(gone),
               "patch_grid": str(grid_path) if grid_path else None, "patch_grid_cell": cell,
               "patch_grid_scale": GRID_SCALE,
               "examples": {bank.names[k]: [analysis.ids[i] for i in idx] for k, idx in enumerate(examples)},
               "poison": cfg.poison, "labels": cfg.labels, "trainable": cfg.trainable, "reset_units": reset,
               "n_poisons": len(forget), "n_retain": len(retain), "n_analysis": len(analysis),
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    donors = ", ".join(f"{t}→{d['donor']} ({d['rule']}, {d['target_concept']}/{d['donor_concept']})"
                       for t, d in details["donors"].items())
    logs.insert(0, f"concepts: {len(bank.names)} prototypes of {bank.layer}; donors {donors}; "
                   f"grid {grid_path or 'not drawn'}")
    return details, logs


def _reset_class_units(model: nn.Module, analysis: Part, targets: list[int], cfg: Config, dev: torch.device) -> int:
    """Re-initialise the penultimate units that carry the forgotten classes (ranked on their
    non-member analysis images, never the forget set). Returns how many were reset."""
    if not cfg.reset_units:
        return 0
    mask = torch.from_numpy(np.isin(analysis.y.numpy(), targets))
    if not mask.any():
        raise NotApplicable("concept_poisoning: reset_units needs non-member images of the forgotten class to rank "
                            "units on; there are none")
    units = class_units(model, analysis.x[mask], targets, cfg.reset_units, cfg.pcbm_ig_steps, dev)
    reset_units(model, units, cfg.seed)
    return len(units)


__all__ = ["EXACT", "IMPORTANCE", "LABEL_MODES", "POISON_MODES", "REQUEST_KINDS", "TRAINABLE", "Config", "unlearn"]
