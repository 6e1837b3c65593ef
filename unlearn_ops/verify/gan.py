"""Verification for GANs: class share, discriminator-score MIA, classifier-feature FID, downstream test.

All metrics that look at *what the generator makes* use the project's own reference classifier
(a `SmallCNN` trained on MNIST-5k, attached to the GAN container by the build):

- `class_share`: share of generated samples the reference classifier assigns to the forgotten
  class(es). After class unlearning it should fall to the retrained GAN's level (not to 0: the
  classifier mislabels some samples of other classes).
- `d_mia`: a discriminator-score membership test — ROC AUC of D(x) on the forgotten items against
  non-members of the same classes (`verify.mia.auc`, higher score = member). 0.5 = D cannot tell
  them apart; well below 0.5 means D now *rejects* the forgotten items, which is also visible.
- `classifier_fid`: the Fréchet distance between real and generated images in the reference
  classifier's penultimate features (`SmallCNN.embed`, 512-d), computed by torchmetrics'
  `FrechetInceptionDistance` with a custom feature extractor. **This is a classifier-feature FID,
  not Inception-FID**: numbers are comparable only with each other (same classifier, same sample
  sizes), never with published MNIST FIDs.
- `downstream_accuracy`: a small classifier trained only on generated samples, pseudo-labelled by
  the reference classifier, scored on the real test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.models.classifiers import SmallCNN
from unlearn_ops.models.gan import GAN, d_scores, generate
from unlearn_ops.training import TrainConfig, accuracy, fit, predict_logits
from unlearn_ops.verify.mia import auc, matched_nonmembers
from unlearn_ops.verify.utility import retained_class_part

FID_NAME = "classifier-feature FID (not Inception-FID)"
# The downstream classifier: the project's CNN, narrowed so the test costs seconds, not minutes.
DOWNSTREAM_SPEC = {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": (16, 32), "hidden": 128}


def reference_of(gan: GAN, reference: nn.Module | None = None) -> nn.Module:
    ref = reference if reference is not None else gan.reference
    if ref is None:
        raise ValueError("GAN verification needs a reference classifier: attach one (GAN.attach_reference) "
                         "or pass reference=")
    return ref


def predicted_classes(gan: GAN, n: int, seed: int, reference: nn.Module | None = None) -> np.ndarray:
    """The reference classifier's label for n generated samples (fixed latent seed)."""
    return predict_logits(reference_of(gan, reference), generate(gan, n, seed)).argmax(1).numpy()


def class_histogram(gan: GAN, num_classes: int, n: int = 2000, seed: int = 0,
                    reference: nn.Module | None = None) -> list[float]:
    """Share of generated samples per predicted class (sums to 1)."""
    pred = predicted_classes(gan, n, seed, reference)
    return (np.bincount(pred, minlength=num_classes) / max(len(pred), 1)).tolist()


def class_share(gan: GAN, classes: Sequence[int], n: int = 2000, seed: int = 0,
                reference: nn.Module | None = None) -> float:
    """Share of generated samples the reference classifier assigns to any of `classes`."""
    return float(np.isin(predicted_classes(gan, n, seed, reference), list(classes)).mean())


def d_mia(gan: GAN, forget: Part, nonmember: Part) -> dict[str, float]:
    """Discriminator-score MIA: AUC of D(x) on forget items vs same-class non-members, and means."""
    others = matched_nonmembers(forget, nonmember)
    sf, sn = d_scores(gan, forget.x).numpy(), d_scores(gan, others.x).numpy()
    return {"d_mia_auc": auc(sf, sn), "d_forget_mean": float(sf.mean()), "d_nonmember_mean": float(sn.mean())}


def d_generated_mean(gan: GAN, n: int = 1000, seed: int = 0) -> float:
    """Mean D(G(z)) on n generated samples (the stop rule's target level)."""
    return float(d_scores(gan, generate(gan, n, seed)).mean())


class ClassifierFeatures(nn.Module):
    """The reference classifier's penultimate features as a torchmetrics FID feature extractor."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.head.in_features)  # torchmetrics reads this (no dummy pass)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.classifier.eval()
        return self.classifier.embed(x.float())


class FidReference:
    """Classifier-feature FID against a fixed real set whose features are extracted once.

    Wraps torchmetrics' `FrechetInceptionDistance` with `reset_real_features=False`; calling it
    with generated images returns their FID (the metric keeps sums and covariances in float64).
    """

    def __init__(self, real: torch.Tensor, classifier: nn.Module, batch_size: int = 500) -> None:
        self.metric = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), normalize=True,
                                               reset_real_features=False)
        self.device = next(classifier.parameters()).device
        self.batch_size = batch_size
        self._update(real, real=True)

    def _update(self, images: torch.Tensor, real: bool) -> None:
        for i in range(0, len(images), self.batch_size):
            self.metric.update(images[i:i + self.batch_size].to(self.device), real=real)

    def __call__(self, fake: torch.Tensor) -> float:
        self.metric.reset()  # drops the previous generated set, keeps the real one
        self._update(fake, real=False)
        return float(self.metric.compute())


def feature_fid(real: torch.Tensor, fake: torch.Tensor, classifier: nn.Module, batch_size: int = 500) -> float:
    """Classifier-feature FID (not Inception-FID) between two image sets, via torchmetrics."""
    return FidReference(real, classifier, batch_size)(fake)


def classifier_fid(gan: GAN, real: torch.Tensor, n: int = 2000, seed: int = 0,
                   reference: nn.Module | None = None) -> float:
    """Classifier-feature FID (not Inception-FID) between `real` images and n generated ones."""
    return feature_fid(real, generate(gan, n, seed), reference_of(gan, reference))


def downstream_accuracy(gan: GAN, test: Part, n: int = 4000, epochs: float = 3, seed: int = 0,
                        reference: nn.Module | None = None, exclude_classes: Sequence[int] = ()) -> dict[str, float]:
    """Train a small CNN on n generated samples labelled by the reference classifier; real test accuracy.

    `downstream_test_accuracy` is on the whole test set; with `exclude_classes` (the forgotten
    classes) also `downstream_retained_test_accuracy`, on the test samples of the other classes.
    """
    ref = reference_of(gan, reference)
    x = generate(gan, n, seed)
    y = predict_logits(ref, x).argmax(1)
    data = Part(tuple(f"generated/{i}" for i in range(n)), x, y)
    torch.manual_seed(seed)
    clf = SmallCNN(**{**DOWNSTREAM_SPEC, "num_classes": int(ref.head.out_features)})
    fit(clf, data, TrainConfig(epochs=epochs, lr=1e-3, batch_size=128, seed=seed, device="cpu"))
    out = {"downstream_test_accuracy": accuracy(clf, test)}
    if exclude_classes:
        out["downstream_retained_test_accuracy"] = accuracy(clf, retained_class_part(test, list(exclude_classes)))
    return out


def gan_metrics(gan: GAN, splits: Splits, *, forget_classes: Sequence[int] = (), n: int = 2000, seed: int = 0,
                reference: nn.Module | None = None, downstream: bool = False,
                reference_fid: float | None = None, fid_reference: FidReference | None = None) -> dict[str, float]:
    """Every GAN metric in one dict (what gates and benchmarks read).

    FID is measured against the retain set (for a class deletion that excludes the class, which
    the unlearned GAN should no longer make); pass `fid_reference` (built on `splits.retain.x`)
    to reuse its real features across models. `reference_fid` (the previous champion's FID on the
    same data) adds `fid_change`, the relative change (+0.10 = 10 % worse).
    """
    out = d_mia(gan, splits.forget, splits.nonmember)
    fake = generate(gan, n, seed)
    out["d_generated_mean"] = float(d_scores(gan, fake).mean())
    ref = reference_of(gan, reference)
    if forget_classes:  # an item deletion has no forgotten class (its items span all classes)
        pred = predict_logits(ref, fake).argmax(1).numpy()
        out["forget_class_share"] = float(np.isin(pred, list(forget_classes)).mean())
    out["fid"] = (fid_reference or FidReference(splits.retain.x, ref))(fake)
    if reference_fid is not None and reference_fid > 0:
        out["fid_change"] = out["fid"] / reference_fid - 1.0
    if downstream:
        out.update(downstream_accuracy(gan, splits.test, seed=seed, reference=reference,
                                       exclude_classes=list(forget_classes)))
    return out


def gan_production_metrics(candidate: GAN, splits: Splits, *, forget_classes: Sequence[int] = (),
                           champion: GAN | None = None, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """What production gates read for a GAN; needs no retrained model.

    Class deletions: `forget_class_share` (gate it near the retrained GAN's level, see the
    benchmark). Item deletions: `d_mia_auc` (forgotten items vs same-class non-members).
    Both: `fid_change`, the candidate's classifier-feature FID relative to the previous champion's
    on the same retained images (`champion` given), and the means behind them.

    The judge is the champion's reference classifier when a champion is given: every candidate is
    measured with the same instrument (an exact retrain refits the candidate's own reference
    without the forgotten class, which would then never be recognised in what G makes).
    """
    ref = reference_of(champion if champion is not None else candidate)
    fid_reference = FidReference(splits.retain.x, ref)
    champion_fid = fid_reference(generate(champion, n, seed)) if champion is not None else None
    out = gan_metrics(candidate, splits, forget_classes=forget_classes, n=n, seed=seed, reference=ref,
                      fid_reference=fid_reference, reference_fid=champion_fid)
    if champion_fid is not None:
        out["champion_fid"] = champion_fid
    return out


__all__ = ["FID_NAME", "ClassifierFeatures", "FidReference", "class_histogram", "class_share", "classifier_fid", "d_mia", "feature_fid",
           "d_generated_mean", "downstream_accuracy", "gan_metrics", "gan_production_metrics", "predicted_classes"]
