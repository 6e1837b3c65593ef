"""Concept banks: what scores an input against concepts, and the patches around where a concept fires.

`PrototypeBank` (images) derives its concepts from the model itself: k-means prototypes of one conv
layer's spatial feature vectors (no CLIP download). `PhraseBank` (text) embeds words with the
classifier's own encoder. `ConceptBank` is the interface a CLIP-based, text-defined bank would implement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def embed(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A text classifier's sentence embeddings of token IDs `x`, in batches."""
    from unlearn_ops.models.text import embed_batched  # lazy: transformers is slow to import

    return embed_batched(model, x, device)


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
        self.vectors = F.normalize(embed(model, model.tokenize(phrases), device), dim=1)

    def from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb.float(), dim=1) @ self.vectors.T

    def activations(self, x: torch.Tensor) -> ConceptScores:
        scores = self.from_embeddings(embed(self.model, x, self.device))
        none = torch.full_like(scores, -1, dtype=torch.long)
        return ConceptScores(scores, none, none)


def frequent_words(texts: np.ndarray, k: int) -> list[str]:
    """The k most frequent content words (English stop words and short tokens dropped)."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b", max_features=k)
    counts = np.asarray(vec.fit_transform([str(t) for t in texts]).sum(0)).ravel()
    words = vec.get_feature_names_out()
    return [str(words[i]) for i in np.lexsort((words, -counts))]  # by count, ties alphabetical: deterministic


# --------------------------------------------------------------------------- example patches
def concept_examples(scores: ConceptScores, n: int) -> list[list[int]]:
    """Per concept, the indices of the `n` samples where it fires most (distinct samples)."""
    order = torch.argsort(scores.scores, dim=0, descending=True, stable=True)
    return [order[:n, k].tolist() for k in range(scores.scores.shape[1])]


def box_corner(center: int, side: int, size: int) -> int:
    """Top-left coordinate of a `side` box centred at `center` (odd sides: exactly; even: the
    centre is the lower-right of the middle four), kept inside 0..size."""
    return int(min(max(center - side // 2, 0), size - side))


def crop(img: torch.Tensor, row: int, col: int, side: int) -> torch.Tensor:
    top, left = box_corner(row, side, img.shape[-2]), box_corner(col, side, img.shape[-1])
    return img[..., top:top + side, left:left + side]


def side_px(share: float, size: int) -> int:
    return int(min(size, max(2, round(share * size))))



def concept_patches(images: torch.Tensor, scores: ConceptScores, examples: list[list[int]],
                    side: int) -> list[list[torch.Tensor]]:
    """Per concept k, the `side`-pixel patches of its example images around where k fires there."""
    return [[crop(images[i], int(scores.rows[i, k]), int(scores.cols[i, k]), side) for i in idx]
            for k, idx in enumerate(examples)]
