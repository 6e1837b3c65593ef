"""`concept_poisoning`: class (and entity) unlearning by concept inference and data poisoning.

Paper: W. Chang, T. Zhu, H. Xu, W. Liu, W. Zhou, "Class Machine Unlearning for Complex Data via
Concepts Inference and Data Poisoning", arXiv 2405.15662 (2024); official code MIT
(ChangWenhan/Concept_Inference_Unlearn_official). This is our own reimplementation.

What it does (images):
  A. Concept inference. A concept bank scores every image per concept (activation + location).
     A post-hoc concept bottleneck (PCBM: elastic-net logistic regression on the activations)
     maps concepts to classes; captum IntegratedGradients on the PCBM (a torch Linear, zero
     baseline) ranks each class's concepts, with the PCBM weight ranking as a cross-check.
  B. Donor class by the paper's confusion rule: if one of the target class's top-M concepts is
     another class's top-1 concept, that class is the donor (and that concept the donor
     concept); otherwise the class with the largest PCBM weight on the target's top-1 concept.
  C. Poisons from forget images: a donor image's patch pasted where the target concept fires
     (`localized`; ablations `center | random | full | none`), relabelled `targeted` (donor) |
     `random` (uniform, may draw the forgotten class itself, as in the paper) | `keep` (control).
  D. Fine-tune with plain cross-entropy on retain ∪ poisons (the head by default). Retained and
     poisoned samples are capped alike per class (`retain_per_class`): the paper poisons every
     forget image, but next to a retain subset that lets the poisons outnumber each retained
     class and drags the retained classes toward the donor (measured: −4.6 pt on Fashion-MNIST
     class 6); keeping the class balance of the training set avoids it.
Text: the same A/B/D with a bank of words embedded by the encoder, and poisons that mask each
snippet's top-k tokens by LayerIntegratedGradients (32 steps, pad baseline) and relabel them.

Why this design (the authors' own caveats, ../shared/research/seeds.md "Paper 2"): label
flipping alone (`none + targeted`) already forgets a class on images; the localized patch adds
control over *what* the model now confuses the class with; `keep` labels never forget; on
generative LLMs masking is what matters. On a classifier, masking the very tokens that carry the
class removes the evidence the relabel must override (with a frozen encoder such poisons can be
"already forgotten" and move nothing; see the tests), so `none` (relabel only) is the reliable
text mode. We keep every mode so the ablation is one config away.

Our choices, since nothing may be downloaded: the default image bank is built from the model
itself (k-means prototypes of a conv layer's spatial feature vectors; activation = max cosine
similarity over locations, location = argmax) instead of CLIP + ConceptNet. `ConceptBank` is the
interface a CLIP-based, text-defined bank would implement. Concepts are unnamed prototypes; each
keeps its top example patches in a PNG grid for a human to name.

Privacy: everything that describes concepts (bank, PCBM, IG, example patches) is computed from
non-member ∪ retained samples only, never the forget set. Poisons derived from forget samples
exist only in memory for the duration of the call: they are never written, logged or returned
(`details` holds plain numbers, IDs of non-forget samples and the grid's path).
"""

from __future__ import annotations

import math
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.base import UnlearnResult, fresh_copy
from unlearn_ops.training import TrainConfig, fit
from unlearn_ops.utils import resolve_device

POISON_MODES = ("localized", "center", "random", "full", "none")
LABEL_MODES = ("targeted", "random", "keep")
IMPORTANCE = ("ig", "weight")
TRAINABLE = ("head", "last", "all")
GRID_SCALE = 4  # the concept grid's patches are enlarged 4× by pixel repetition (row k = concept k)
TEXT_POISON_MODES = ("localized", "random", "none")  # text: mask by LIG | mask at random | label only

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
    report_dir: str = ""            # folder for the concept patch grid PNG; "" = a new temp folder (caller logs it)
    # --- poisons
    poison: str = "localized"       # images: localized|center|random|full|none; text: localized (LIG mask)|random|none
    labels: str = "targeted"        # targeted (donor class) | random (uniform over all classes) | keep (control)
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
    trainable: str = "head"         # head | all (images); head | last | all (text; last = head + last encoder block)
    retain_per_class: int = 500     # samples per class in the fine-tuning set, retained and poisoned alike; 0 = all
    epochs: float = 3               # passes over retain ∪ poisons (fractional allowed)
    lr: float = 1e-3                # learning rate
    batch_size: int = 128           # batch size
    optimizer: str = "adam"         # adam | sgd (paper: sgd, momentum 0.9, lr 1e-3, batch 32)
    seed: int = 0                   # k-means, PCBM, donor images, random labels/positions, data order

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_concepts", tuple(str(c) for c in self.text_concepts))
        for name, value, allowed in (("poison", self.poison, POISON_MODES), ("labels", self.labels, LABEL_MODES),
                                     ("importance", self.importance, IMPORTANCE),
                                     ("trainable", self.trainable, TRAINABLE)):
            if value not in allowed:
                raise ValueError(f"concept_poisoning: {name}={value!r}; choose one of {allowed}")
        for name in ("patch", "center_patch", "full_patch"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"concept_poisoning: {name} is a share of the image side, in (0, 1]")
        if self.top_concepts < 1 or self.n_concepts < 2:
            raise ValueError("concept_poisoning: need top_concepts >= 1 and n_concepts >= 2")


# =========================================================================== concept banks
@dataclass(frozen=True)
class ConceptScores:
    """Per sample and concept: activation, and where it fires (pixel centre; -1 = not spatial)."""

    scores: torch.Tensor  # N × K
    rows: torch.Tensor    # N × K, long
    cols: torch.Tensor    # N × K, long


class ConceptBank(ABC):
    """Anything that scores inputs against named concepts.

    The default image bank is `PrototypeBank` (from the model itself). A user with local CLIP
    weights can implement a text-defined bank (concept names → CLIP text vectors, activation =
    similarity of CLIP patch embeddings, location = best patch) and pass it to `infer_concepts`.
    """

    names: list[str]

    @abstractmethod
    def activations(self, x: torch.Tensor) -> ConceptScores:
        """Scores for a batch of inputs (images N×C×H×W)."""


class _Stop(Exception):
    """Raised by a forward hook once the wanted layer has run (skips the rest of the network)."""


def _layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    holder: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        holder["out"] = output
        raise _Stop

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in holder:
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    return holder["out"]


def spatial_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last module whose output is N×C×H×W with at least 2×2 locations (conv features)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=name: shapes.__setitem__(n, tuple(o.shape))
                                       if isinstance(o, torch.Tensor) else None)
               for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    spatial = [n for n, s in shapes.items() if len(s) == 4 and s[2] >= 2 and s[3] >= 2]
    if not spatial:
        raise ValueError("no layer with a spatial (N×C×H×W, ≥2×2) output: set `layer` or use a CNN")
    return spatial[-1]  # hooks fire in execution order, so the last one is the deepest


class PrototypeBank(ConceptBank):
    """Concepts = k-means prototypes of one conv layer's spatial feature vectors.

    Activation of concept k on an image = max over locations of the cosine similarity between
    the location's feature vector and prototype k; its location = the argmax, mapped to the
    centre of that location's cell in input pixels (approximate receptive-field centre).
    """

    def __init__(self, model: nn.Module, layer: str, prototypes: torch.Tensor, image_size: tuple[int, int],
                 device: torch.device, batch_size: int = 512) -> None:
        self.model, self.layer, self.device, self.batch_size = model, layer, device, batch_size
        self.prototypes = F.normalize(prototypes.float(), dim=1).to(device)
        self.image_size = image_size
        self.names = [f"c{k:02d}" for k in range(len(prototypes))]

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """N × C × h × w feature maps of `layer` (model in eval mode)."""
        self.model.eval()
        return _layer_output(self.model, self.layer, x.to(self.device)).float()

    @classmethod
    def fit(cls, model: nn.Module, images: torch.Tensor, *, n_concepts: int, n_points: int, seed: int,
            device: torch.device, layer: str = "auto") -> tuple[PrototypeBank, ConceptScores]:
        """k-means on the images' spatial feature vectors; returns the bank and the images' scores
        (computed from the same feature maps: one forward pass per image, not two)."""
        from sklearn.cluster import KMeans

        model.eval()
        name = spatial_layer(model, images[:2].to(device)) if layer == "auto" else layer
        bank = cls(model, name, torch.zeros(1, 1), tuple(images.shape[-2:]), device)
        maps = [bank._features(images[i:i + bank.batch_size]).cpu() for i in range(0, len(images), bank.batch_size)]
        vec = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in maps])
        # dead locations (all-zero after ReLU, e.g. blank background) carry no direction: drop them
        vec = vec[vec.norm(dim=1) > 1e-6]
        if len(vec) < n_concepts:
            raise ValueError(f"only {len(vec)} non-zero feature vectors for {n_concepts} concepts")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(vec), size=min(n_points, len(vec)), replace=False)
        unit = F.normalize(vec[np.sort(pick)], dim=1).numpy()
        km = KMeans(n_clusters=n_concepts, n_init=1, random_state=seed).fit(unit)  # k-means++ init
        bank = cls(model, name, torch.from_numpy(km.cluster_centers_), bank.image_size, device)
        return bank, bank._merge([bank._score(f.to(device)) for f in maps])

    def _score(self, maps: torch.Tensor) -> ConceptScores:
        """Scores and pixel locations from N × C × h × w feature maps."""
        f = F.normalize(maps, dim=1)
        n, _, h, w = f.shape
        sim = torch.einsum("nchw,kc->nkhw", f, self.prototypes).reshape(n, -1, h * w)
        best, where = sim.max(dim=2)
        rows = (((where // w).float() + 0.5) * self.image_size[0] / h).long()
        cols = (((where % w).float() + 0.5) * self.image_size[1] / w).long()
        return ConceptScores(best.cpu(), rows.cpu(), cols.cpu())

    @staticmethod
    def _merge(parts: list[ConceptScores]) -> ConceptScores:
        return ConceptScores(*(torch.cat([getattr(p, k) for p in parts]) for k in ("scores", "rows", "cols")))

    def activations(self, x: torch.Tensor) -> ConceptScores:
        return self._merge([self._score(self._features(x[i:i + self.batch_size]))
                            for i in range(0, len(x), self.batch_size)])


class PhraseBank(ConceptBank):
    """Text concepts: words/phrases embedded by the classifier's own encoder (mean pooling).

    Activation of concept k on a snippet = cosine similarity of the two sentence embeddings."""

    def __init__(self, model: nn.Module, phrases: list[str], device: torch.device) -> None:
        self.model, self.names, self.device = model, list(phrases), device
        self.vectors = F.normalize(_embed(model, model.tokenize(phrases), device), dim=1)

    def from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb.float(), dim=1) @ self.vectors.T

    def activations(self, x: torch.Tensor) -> ConceptScores:
        scores = self.from_embeddings(_embed(self.model, x, self.device))
        none = torch.full_like(scores, -1, dtype=torch.long)
        return ConceptScores(scores, none, none)


def frequent_words(texts: np.ndarray, k: int) -> list[str]:
    """The k most frequent content words (English stop words and short tokens dropped)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b", max_features=k)
    counts = np.asarray(vec.fit_transform([str(t) for t in texts]).sum(0)).ravel()
    words = vec.get_feature_names_out()
    return [str(words[i]) for i in np.lexsort((words, -counts))]  # by count, ties alphabetical: deterministic


# =========================================================================== PCBM + importance
def analysis_part(splits: Splits, per_class: int, seed: int) -> Part:
    """Up to `per_class` samples per class from non-member ∪ retain: never the forget set.

    Non-members come first, so a forgotten class (absent from retain) is still represented."""
    pool = splits.nonmember.concat(splits.retain)
    rng = np.random.default_rng(seed)
    y = pool.y.numpy()
    keep: list[int] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.extend(sorted(rng.permutation(idx)[:per_class].tolist()))
    return pool.subset(np.sort(np.asarray(keep, dtype=np.int64)))


def fit_pcbm(acts: np.ndarray, y: np.ndarray, num_classes: int, cfg: Config) -> nn.Linear:
    """Elastic-net logistic regression on concept activations (paper settings), as a torch Linear.

    sklearn stores a binary problem as one row w (logit of class 1); the equivalent two-row
    softmax head is [-w/2, +w/2] (softmax of ±z/2 = sigmoid z), so every class gets a row.
    Classes missing from the analysis data get a zero row."""
    from sklearn.linear_model import SGDClassifier

    clf = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=cfg.pcbm_alpha, l1_ratio=cfg.pcbm_l1_ratio,
                        max_iter=cfg.pcbm_max_iter, random_state=cfg.seed).fit(acts, y)
    coef, bias = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:
        coef, bias = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    weight = np.zeros((num_classes, acts.shape[1]), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    weight[clf.classes_], b[clf.classes_] = coef, bias
    head = nn.Linear(acts.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(b))
    return head.eval()


def ig_attributions(head: nn.Linear, acts: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """captum IntegratedGradients of `head` w.r.t. concept activations, zero baseline.

    For a linear head this is exactly W[target] ⊙ activation (the test checks it)."""
    from captum.attr import IntegratedGradients

    x = acts.float().clone().requires_grad_(True)
    # captum differentiates every (sample, step) output at once; its cost grows faster than
    # linearly with that count, so chunks of 256 samples keep it to seconds for thousands
    return IntegratedGradients(head).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                                               internal_batch_size=256 * steps).detach()


def concept_importance(head: nn.Linear, acts: torch.Tensor, y: torch.Tensor, num_classes: int,
                       steps: int) -> np.ndarray:
    """C × K: the mean IG attribution toward class c over the analysis samples of class c."""
    attr = ig_attributions(head, acts, y, steps)
    out = np.zeros((num_classes, acts.shape[1]))
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            out[c] = attr[mask].mean(0).numpy()
    return out


def top_concepts(importance: np.ndarray, m: int) -> np.ndarray:
    """C × m concept indices, most important first (ties broken by index: deterministic)."""
    return np.argsort(-importance, axis=1, kind="stable")[:, :m]


@dataclass(frozen=True)
class Donor:
    target: int
    donor: int
    target_concept: int
    donor_concept: int
    rule: str  # "confusion" | "shared"


def choose_donor(ranking: np.ndarray, weight: np.ndarray, target: int, excluded: set[int]) -> Donor:
    """The paper's rule. `ranking` C × M (top concepts per class), `weight` C × K (PCBM).

    Confusion: the first of the target's top-M concepts that is another (allowed) class's top-1
    concept names that class as donor. Shared (fallback): the allowed class with the largest
    weight on the target's top-1 concept; the donor concept is that same concept."""
    allowed = [d for d in range(len(ranking)) if d != target and d not in excluded]
    if not allowed:
        raise ValueError(f"no donor class for class {target}: every other class is being forgotten")
    t_top = int(ranking[target][0])
    for k in ranking[target]:
        for d in allowed:
            if int(ranking[d][0]) == int(k):
                return Donor(target, d, t_top, int(k), "confusion")
    d = max(allowed, key=lambda c: (weight[c, t_top], -c))
    return Donor(target, int(d), t_top, t_top, "shared")


@dataclass
class ConceptReport:
    """What concept inference found (plain values, safe to log)."""

    names: list[str]
    importance: np.ndarray      # C × K class-mean IG
    weight: np.ndarray          # C × K PCBM weights
    ranking: np.ndarray         # C × M by the configured importance
    donors: dict[int, Donor]
    pcbm_accuracy: float

    def as_details(self, classes: list[int]) -> dict[str, Any]:
        m = self.ranking.shape[1]
        by_ig = top_concepts(self.importance, m)
        by_w = top_concepts(self.weight, m)
        agreement = float(np.mean([len(set(by_ig[c]) & set(by_w[c])) / m for c in classes])) if classes else float("nan")
        per_class = {str(c): {"top_concepts": [self.names[k] for k in self.ranking[c]],
                              "importance": [round(float(self.importance[c, k]), 6) for k in self.ranking[c]],
                              "top_by_ig": [self.names[k] for k in by_ig[c]],
                              "top_by_weight": [self.names[k] for k in by_w[c]]}
                     for c in range(len(self.ranking))}
        donors = {str(t): {"donor": d.donor, "target_concept": self.names[d.target_concept],
                           "donor_concept": self.names[d.donor_concept], "rule": d.rule}
                  for t, d in self.donors.items()}
        return {"concepts": list(self.names), "classes": per_class, "donors": donors,
                "ig_weight_top_agreement": agreement, "pcbm_accuracy": self.pcbm_accuracy}


def infer_concepts(acts: torch.Tensor, y: torch.Tensor, names: list[str], num_classes: int,
                   targets: list[int], excluded: set[int], cfg: Config) -> ConceptReport:
    """PCBM on the activations, IG importance, ranking and a donor per target class."""
    head = fit_pcbm(acts.numpy(), y.numpy(), num_classes, cfg)
    with torch.no_grad():
        pcbm_acc = float((head(acts.float()).argmax(1) == y).float().mean())
    importance = concept_importance(head, acts, y, num_classes, cfg.pcbm_ig_steps)
    weight = head.weight.detach().numpy().astype(float)
    m = min(cfg.top_concepts, len(names))
    ranking = top_concepts(importance if cfg.importance == "ig" else weight, m)
    donors = {t: choose_donor(ranking, weight, t, excluded) for t in targets}
    return ConceptReport(names, importance, weight, ranking, donors, pcbm_acc)


# =========================================================================== image poisons
def _box(center: int, side: int, size: int) -> int:
    """Top-left coordinate of a `side` box centred at `center` (odd sides: exactly; even: the
    centre is the lower-right of the middle four), kept inside 0..size."""
    return int(min(max(center - side // 2, 0), size - side))


def crop(img: torch.Tensor, row: int, col: int, side: int) -> torch.Tensor:
    top, left = _box(row, side, img.shape[-2]), _box(col, side, img.shape[-1])
    return img[..., top:top + side, left:left + side]


def paste(img: torch.Tensor, patch: torch.Tensor, row: int, col: int) -> torch.Tensor:
    out = img.clone()
    sh, sw = patch.shape[-2:]
    top, left = _box(row, sh, img.shape[-2]), _box(col, sw, img.shape[-1])
    out[..., top:top + sh, left:left + sw] = patch
    return out


def _side(share: float, size: int) -> int:
    return int(min(size, max(2, round(share * size))))


def poison_image(x: torch.Tensor, donor: torch.Tensor, mode: str, target_loc: tuple[int, int],
                 donor_loc: tuple[int, int], cfg: Config, rng: np.random.Generator) -> torch.Tensor:
    """One poisoned image (C×H×W) per the paper's modes; `none` returns `x` unchanged."""
    h, w = x.shape[-2:]
    centre = (h // 2, w // 2)
    if mode == "none":
        return x
    if mode == "localized":
        return paste(x, crop(donor, *donor_loc, _side(cfg.patch, h)), *target_loc)
    if mode in ("center", "random"):
        patch = crop(donor, *centre, _side(cfg.center_patch, h))
        where = centre if mode == "center" else (int(rng.integers(0, h)), int(rng.integers(0, w)))
        return paste(x, patch, *where)
    side = _side(cfg.full_patch, h)  # full: the whole donor image, shrunk, in the middle
    small = F.interpolate(donor[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    return paste(x, small, *centre)


def poison_labels(y: torch.Tensor, donors: dict[int, Donor], mode: str, num_classes: int,
                  rng: np.random.Generator) -> torch.Tensor:
    if mode == "keep":
        return y.clone()
    if mode == "random":  # uniform over all classes: may draw the forgotten class (paper's caveat)
        return torch.from_numpy(rng.integers(0, num_classes, size=len(y)).astype(np.int64))
    return torch.tensor([donors[int(c)].donor for c in y.tolist()], dtype=torch.long)


def make_image_poisons(forget: Part, retain: Part, bank: ConceptBank, report: ConceptReport, cfg: Config,
                       num_classes: int, rng: np.random.Generator) -> Part:
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
    labels = poison_labels(forget.y, report.donors, cfg.labels, num_classes, rng)
    return Part(tuple(f"poison/{i:06d}" for i in range(len(forget))), poisons_x, labels)


# =========================================================================== concept examples
def concept_examples(scores: ConceptScores, n: int) -> list[list[int]]:
    """Per concept, the indices of the `n` samples where it fires most (distinct samples)."""
    order = torch.argsort(scores.scores, dim=0, descending=True, stable=True)
    return [order[:n, k].tolist() for k in range(scores.scores.shape[1])]


def patch_grid(images: torch.Tensor, scores: ConceptScores, examples: list[list[int]], side: int,
               scale: int = 4) -> np.ndarray:
    """H × W (× 3) array in [0, 1]: row k = concept k's example patches at 1:1, then enlarged
    `scale`× by pixel repetition (no interpolation: what a human sees is the data). 1-px gaps."""
    channels = images.shape[1]
    n = max(len(e) for e in examples)
    cell = side + 1
    grid = np.ones((channels, len(examples) * cell + 1, n * cell + 1), dtype=np.float32)
    for k, idx in enumerate(examples):
        for j, i in enumerate(idx):
            p = crop(images[i], int(scores.rows[i, k]), int(scores.cols[i, k]), side).numpy()
            grid[:, 1 + k * cell: 1 + k * cell + side, 1 + j * cell: 1 + j * cell + side] = p
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid[0] if channels == 1 else np.transpose(grid[:3], (1, 2, 0))


def save_grid(grid: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.clip(grid, 0, 1), cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    return path


# =========================================================================== fine-tuning
def _embed(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    from unlearn_ops.models.text import embed_batched

    return embed_batched(model, x, device)


def per_class_subset(part: Part, per_class: int, seed: int) -> Part:
    """At most `per_class` samples of each class (seeded); `per_class <= 0` keeps everything."""
    if per_class <= 0 or len(part) == 0:
        return part
    rng = np.random.default_rng(seed + 1)
    y = part.y.numpy()
    keep = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return part.subset(np.sort(np.concatenate(keep)))


def poison_sources(forget: Part, cfg: Config) -> Part:
    """The forget samples that get a poison. With `retain_per_class`, each forgotten class gets
    as many poisons as each retained class has samples: the fine-tuning set keeps the original
    class balance (the paper's "integrity" cuts every class alike). `max_poisons` caps the total."""
    chosen = per_class_subset(forget, cfg.retain_per_class, cfg.seed + 7)
    return chosen.sample(cfg.max_poisons, cfg.seed) if cfg.max_poisons > 0 else chosen


def _trainable_params(model: nn.Module, trainable: str) -> list[nn.Parameter]:
    if trainable == "all":
        return list(model.parameters())
    params = list(model.head.parameters())
    if trainable == "last":
        if not hasattr(model, "last_layer"):
            raise ValueError("trainable=last needs a text model (head + last encoder block); use head or all")
        params += list(model.last_layer.parameters())
    return params


def finetune(model: nn.Module, retain: Part, poisons: Part, cfg: Config, device: torch.device,
             logs: list[str]) -> None:
    """Cross-entropy on retain ∪ poisons, in place. With `head`, the frozen body's embeddings are
    computed once (in memory) and only the Linear head trains on them: same result, far cheaper."""
    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                            seed=cfg.seed, device=str(device))
    if cfg.trainable == "head":
        feats = Part(retain.ids + poisons.ids, torch.cat([_embed(model, retain.x, device), _embed(model, poisons.x, device)]),
                     torch.cat([retain.y, poisons.y]))
        fit(model.head, feats, train_cfg, progress=logs.append)
        return
    keep = {id(p) for p in _trainable_params(model, cfg.trainable)}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        fit(model, retain.concat(poisons), train_cfg, progress=logs.append)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


# =========================================================================== the method
def _classes(splits: Splits) -> tuple[list[int], set[int]]:
    """Classes in the forget set, and those removed entirely (absent from retain): donors must
    come from classes the model keeps; for an entity/item forget set every other class may donate."""
    targets = splits.forget_classes
    kept = set(splits.retain.y.unique().tolist())
    return targets, {c for c in targets if c not in kept}


def _report_dir(cfg: Config) -> Path:
    return Path(cfg.report_dir) if cfg.report_dir else Path(tempfile.mkdtemp(prefix="concept-report-"))


def unlearn(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    """Images (a classifier with `embed`/`head`) or text (`TextClassifier`): see the module doc."""
    from unlearn_ops.models.text import TextClassifier

    if isinstance(model, TextClassifier):
        return unlearn_text(model, splits, cfg, device)
    if cfg.trainable == "last":
        raise ValueError("concept_poisoning: trainable=last is for text models; images use head or all")
    dev = resolve_device(device)
    new = fresh_copy(model).to(dev).eval()
    logs: list[str] = []
    timings: dict[str, float] = {}
    rng = np.random.default_rng(cfg.seed)
    targets, gone = _classes(splits)

    start = time.perf_counter()
    analysis = analysis_part(splits, cfg.analysis_per_class, cfg.seed)
    bank, scores = PrototypeBank.fit(new, analysis.x, n_concepts=cfg.n_concepts, n_points=cfg.kmeans_points,
                                     seed=cfg.seed, device=dev, layer=cfg.layer)
    report = infer_concepts(scores.scores, analysis.y, bank.names, splits.num_classes, targets, gone, cfg)
    timings["concepts"] = time.perf_counter() - start

    start = time.perf_counter()
    examples = concept_examples(scores, cfg.examples_per_concept)
    cell = _side(cfg.example_patch, analysis.x.shape[-2])
    grid_path = save_grid(patch_grid(analysis.x, scores, examples, cell, GRID_SCALE),
                          _report_dir(cfg) / "concept_patches.png")
    timings["report"] = time.perf_counter() - start

    start = time.perf_counter()
    forget = poison_sources(splits.forget, cfg)
    retain = per_class_subset(splits.retain, cfg.retain_per_class, cfg.seed)
    poisons = make_image_poisons(forget, splits.retain, bank, report, cfg, splits.num_classes, rng)
    timings["poisons"] = time.perf_counter() - start

    start = time.perf_counter()
    finetune(new, retain, poisons, cfg, dev, logs)
    del poisons  # the only copy of forget-derived images: gone with this frame
    timings["finetune"] = time.perf_counter() - start

    details = {**report.as_details(targets), "bank": "prototypes", "layer": bank.layer,
               "forget_classes": targets, "classes_removed": sorted(gone),
               "patch_grid": str(grid_path), "patch_grid_cell": cell, "patch_grid_scale": GRID_SCALE,
               "examples": {bank.names[k]: [analysis.ids[i] for i in idx] for k, idx in enumerate(examples)},
               "poison": cfg.poison, "labels": cfg.labels, "trainable": cfg.trainable,
               "n_poisons": len(forget), "n_retain": len(retain), "n_analysis": len(analysis),
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    donors = ", ".join(f"{t}→{d['donor']} ({d['rule']}, {d['target_concept']}/{d['donor_concept']})"
                       for t, d in details["donors"].items())
    logs.insert(0, f"concepts: {len(bank.names)} prototypes of {bank.layer}; donors {donors}; grid {grid_path}")
    return UnlearnResult(new, "concept_poisoning", details=details, log=logs)


# =========================================================================== text variant
def token_attributions(model: nn.Module, ids: torch.Tensor, target: torch.Tensor, steps: int,
                       device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """N × L token importance toward `target`: captum LayerIntegratedGradients on the token
    embedding layer, summed over the hidden size. Baseline: every real token replaced by the pad
    token, [CLS]/[SEP] kept (the paper's pad baseline). Zero on special tokens and padding."""
    from captum.attr import LayerIntegratedGradients

    model.eval()
    lig = LayerIntegratedGradients(lambda i, m: model(i, m), model.token_embeddings)
    special = torch.tensor(model.special_ids)
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        chunk, mask = model.trim(chunk, model.mask_of(chunk))
        real = ~torch.isin(chunk, special)
        base = torch.where(real, torch.full_like(chunk, model.pad_id), chunk)
        with torch.enable_grad():
            attr = lig.attribute(chunk.to(device), baselines=base.to(device), additional_forward_args=(mask.to(device),),
                                 target=target[s:s + batch_size].to(device), n_steps=steps,
                                 internal_batch_size=batch_size * steps)
        score = attr.sum(-1).detach().float().cpu() * real
        out[s:s + len(chunk), :chunk.shape[1]] = score
    return out


def mask_tokens(ids: torch.Tensor, scores: torch.Tensor, k: int, mask_id: int, special: list[int],
                pad_id: int, extra: list[set[int]] | None = None) -> torch.Tensor:
    """Replace each row's top-k scoring real tokens (and any token in `extra[row]`) by `mask_id`."""
    out = ids.clone()
    real = ~torch.isin(ids, torch.tensor(special + [pad_id]))
    ranked = torch.where(real, scores, torch.full_like(scores, -math.inf))
    for r in range(len(ids)):
        n = int(min(k, real[r].sum()))
        if n:
            out[r, torch.topk(ranked[r], n).indices] = mask_id
        if extra and extra[r]:
            hit = torch.isin(ids[r], torch.tensor(sorted(extra[r]))) & real[r]
            out[r, hit] = mask_id
    return out


def text_poison_inputs(model: nn.Module, forget: Part, report: ConceptReport, names: list[str], cfg: Config,
                       rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """Poisoned token IDs (in memory only). `localized`: mask each snippet's top-k tokens by
    LayerIntegratedGradients toward its label, plus (mask_concepts) the words of its class's top
    concepts; `random`: mask k random real tokens (ablation); `none`: unchanged (label-only)."""
    if cfg.poison == "none":
        return forget.x.clone()
    if cfg.poison == "random":
        scores = torch.from_numpy(rng.random(forget.x.shape).astype(np.float32))
        extra = None
    else:
        scores = token_attributions(model, forget.x, forget.y, cfg.ig_steps, device)
        extra = None
        if cfg.mask_concepts:
            words = {c: {int(t) for k in report.ranking[c]
                         for t in model.tokenizer(names[k], add_special_tokens=False)["input_ids"]}
                     for c in range(len(report.ranking))}
            extra = [words[int(c)] for c in forget.y.tolist()]
    return mask_tokens(forget.x, scores, cfg.mask_top_k, int(model.tokenizer.mask_token_id), model.special_ids,
                       model.pad_id, extra)


def unlearn_text(model: nn.Module, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    """Text variant: Parts hold strings (or token IDs); the model is a `TextClassifier`."""
    from unlearn_ops.models.text import tokenized_part

    dev = resolve_device(device)
    new = fresh_copy(model).to(dev).eval()
    logs: list[str] = []
    timings: dict[str, float] = {}
    rng = np.random.default_rng(cfg.seed)
    targets, gone = _classes(splits)

    if cfg.poison not in TEXT_POISON_MODES:
        raise ValueError(f"concept_poisoning: poison={cfg.poison!r} is an image mode; text uses {TEXT_POISON_MODES}")
    start = time.perf_counter()
    analysis_text = analysis_part(splits, cfg.analysis_per_class, cfg.seed)
    if not isinstance(analysis_text.x, np.ndarray) and not cfg.text_concepts:
        raise ValueError("text concept bank: pass `text_concepts` when the splits hold token IDs, not strings")
    phrases = list(cfg.text_concepts) or frequent_words(np.asarray(analysis_text.x), cfg.text_bank_size)
    bank = PhraseBank(new, phrases, dev)
    analysis = tokenized_part(new, analysis_text)
    acts = bank.from_embeddings(_embed(new, analysis.x, dev))
    report = infer_concepts(acts, analysis.y, bank.names, splits.num_classes, targets, gone, cfg)
    timings["concepts"] = time.perf_counter() - start

    start = time.perf_counter()
    forget = poison_sources(splits.forget, cfg)
    forget = tokenized_part(new, forget)
    masked = text_poison_inputs(new, forget, report, bank.names, cfg, rng, dev)
    poisons = Part(tuple(f"poison/{i:06d}" for i in range(len(forget))), masked,
                   poison_labels(forget.y, report.donors, cfg.labels, splits.num_classes, rng))
    n_masked, n_poisons = int((masked != forget.x).sum()), len(forget)
    del masked
    timings["poisons"] = time.perf_counter() - start

    start = time.perf_counter()
    retain = tokenized_part(new, per_class_subset(splits.retain, cfg.retain_per_class, cfg.seed))
    finetune(new, retain, poisons, cfg, dev, logs)
    del poisons, forget
    timings["finetune"] = time.perf_counter() - start

    details = {**report.as_details(targets), "bank": "phrases", "forget_classes": targets,
               "classes_removed": sorted(gone), "labels": cfg.labels, "trainable": cfg.trainable,
               "n_poisons": n_poisons, "tokens_masked": n_masked, "n_retain": len(retain), "n_analysis": len(analysis),
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    donors = ", ".join(f"{t}→{d['donor']} ({d['rule']})" for t, d in details["donors"].items())
    logs.insert(0, f"text concepts: {len(bank.names)} phrases; donors {donors}; {n_masked} tokens masked")
    return UnlearnResult(new, "concept_poisoning", details=details, log=logs)


__all__ = ["Config", "ConceptBank", "ConceptScores", "PhraseBank", "PrototypeBank", "choose_donor",
           "concept_importance", "fit_pcbm", "ig_attributions", "infer_concepts", "make_image_poisons",
           "mask_tokens", "poison_image", "token_attributions", "unlearn", "unlearn_text"]
