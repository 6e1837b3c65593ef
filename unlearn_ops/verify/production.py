"""Production verification of a candidate: the metrics each model family's gates read, measured
against the previous champion (no retrained model needed), and the verdict per request kind.

A batch's forget set may combine a class deletion and item deletions (samples, subject, concept);
each is measured on its own part (`kind_splits`) and judged by the gates of its kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.models.gan import save_sample_grid
from unlearn_ops.models.text import tokenized_splits
from unlearn_ops.training import accuracy
from unlearn_ops.verify import production_metrics
from unlearn_ops.verify.gan import gan_production_metrics
from unlearn_ops.verify.gates import Power, check, power
from unlearn_ops.verify.report import report_pngs
from unlearn_ops.verify.utility import retained_class_part

Metrics = dict[str, dict[str, float]]  # metric group ("class" | "items") → metric → value


@dataclass(frozen=True)
class Settings:
    """How hard verification looks (params.yaml `batch`)."""

    seed: int = 0
    gan_samples: int = 2000    # generated images behind a GAN's class share and FID
    ppl_snippets: int = 64     # held-out snippets behind a language model's perplexity change
    verify_retain: int = 0     # a classifier's retain set is sampled down to this many (0: all)

    @classmethod
    def from_params(cls, batch: Mapping[str, Any] | None) -> Settings:
        batch = batch or {}
        return cls(**{f: batch[f] for f in ("seed", "gan_samples", "ppl_snippets", "verify_retain") if f in batch})


@dataclass(frozen=True)
class Evaluation:
    """A candidate beside the champion it would replace, and the data they are judged on."""

    champion: nn.Module
    candidate: nn.Module
    splits: Splits            # forget = the batch's forget set
    store: SampleStore
    classes: list[int]        # whole classes removed by the batch
    item_ids: set[str]        # IDs removed by item requests (samples, subject, concept)
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Verification:
    passed: bool
    metrics: Metrics
    gates: dict[str, dict[str, Any]]   # request kind → Verdict.to_dict()
    reports: dict[str, Path]


def metric_group(kind: str) -> str:
    """Class deletions are measured on the class part; every other kind on the item part."""
    return "class" if kind == "class" else "items"


def kind_splits(splits: Splits, classes: list[int], item_ids: set[str]) -> dict[str, Splits]:
    """Split the combined forget set back into its class part and its item part."""
    out = {}
    y = splits.forget.y.numpy()
    if classes:
        out["class"] = Splits(splits.forget.where(np.isin(y, classes)), splits.retain, splits.test,
                              splits.nonmember, splits.num_classes)
    items = np.array([i in item_ids and c not in classes for i, c in zip(splits.forget.ids, y, strict=True)])
    if items.any():
        keep_test = retained_class_part(splits.test, classes) if classes else splits.test
        out["items"] = Splits(splits.forget.where(items), splits.retain, keep_test, splits.nonmember, splits.num_classes)
    return out


def judge(metrics: Metrics, gates: Mapping[str, Mapping[str, Any]], kinds: Sequence[str],
          exact: bool) -> dict[str, dict[str, Any]]:
    """The verdict of each request kind's gates (as they apply to an exact or approximate method:
    an exact one passes on its privacy gates where the batch has power, `gates.check`)."""
    verdicts = {}
    for kind in sorted(set(kinds)):
        if kind not in gates:
            raise KeyError(f"no gates configured for request kind {kind!r} (the family's gate section in params.yaml)")
        verdicts[kind] = check(metrics.get(metric_group(kind), {}), gates[kind], exact=exact).to_dict()
    return verdicts


def batch_metrics(labels: Sequence[int], ids: Sequence[str], classes: Sequence[int], item_ids: set[str],
                  kinds: Sequence[str]) -> dict[str, dict[str, float]]:
    """Request kind → what its gates can read before any model exists: `forget_set_size`, counted
    on the part of the forget set that kind is judged on (as `kind_splits` cuts it)."""
    in_class = np.isin(np.asarray(labels), list(classes))
    sizes = {"class": float(in_class.sum()),
             "items": float(sum(i in item_ids and not c for i, c in zip(ids, in_class, strict=True)))}
    return {kind: {"forget_set_size": sizes[metric_group(kind)]} for kind in set(kinds)}


def power_gates(gates: Mapping[str, Mapping[str, Any]], kinds: Sequence[str]) -> bool:
    """Whether any kind of the batch has a gate with a `power_margin` (then approximate methods
    need the power check; docs/verification.md, "Power check")."""
    return any("power_margin" in bounds for kind in set(kinds) for bounds in gates.get(kind, {}).values())


def power_check(metrics: Metrics, gates: Mapping[str, Mapping[str, Any]], kinds: Sequence[str]) -> dict[str, Power]:
    """Request kind → whether its gates reject the champion by their margins (`metrics`: the
    champion measured as its own candidate); kinds whose gates carry no margin are left out."""
    checks = {kind: power(metrics.get(metric_group(kind), {}), gates.get(kind, {})) for kind in sorted(set(kinds))}
    return {kind: c for kind, c in checks.items() if c is not None}


# ------------------------------------------------------------------ image and text classifiers
def sampled_retain(e: Evaluation) -> Evaluation:
    """A classifier's retain accuracy and loss plots are reported, never gated: a seeded sample
    measures them (±1 point at 2 000) at a fraction of the cost of the whole retain set."""
    n, splits = e.settings.verify_retain, e.splits
    if n and len(splits.retain) > n:
        return replace(e, splits=replace(splits, retain=splits.retain.sample(n, e.settings.seed)))
    return e


def reported_retain_ids(retain_ids: Sequence[str], settings: Settings) -> list[str]:
    """The retain IDs `sampled_retain` keeps (the same seeded draw as `Part.sample`), so that a
    verification loads only those instead of the whole retain set."""
    n = settings.verify_retain
    if not n or len(retain_ids) <= n:
        return list(retain_ids)
    keep = np.sort(np.random.default_rng(settings.seed).permutation(len(retain_ids))[:n])
    return [retain_ids[i] for i in keep]


def tokenized(e: Evaluation) -> Evaluation:
    """A text store holds strings; the classifier metrics take the candidate's token IDs."""
    e = sampled_retain(e)
    return replace(e, splits=tokenized_splits(e.candidate, e.splits))


def classifier_metrics(e: Evaluation) -> Metrics:
    """Loss-MIA and accuracy gap vs same-class non-members, utility vs the previous champion."""
    parts, seed = kind_splits(e.splits, e.classes, e.item_ids), e.settings.seed
    metrics: Metrics = {}
    if "class" in parts:
        s = parts["class"]
        metrics["class"] = production_metrics(
            e.candidate, s, forget_classes=e.classes, seed=seed,
            reference_retained_test_accuracy=accuracy(e.champion, retained_class_part(s.test, e.classes)))
    if "items" in parts:
        s = parts["items"]
        metrics["items"] = production_metrics(e.candidate, s, reference_test_accuracy=accuracy(e.champion, s.test),
                                              seed=seed)
    for group in metrics.values():  # how many retain samples stand behind retain_accuracy
        group["retain_evaluated"] = float(len(e.splits.retain))
    return metrics


def classifier_report(e: Evaluation, out: Path) -> dict[str, Path]:
    """ROC, loss histograms and per-class bars (numbers only, no forget-set pixels)."""
    return report_pngs(e.candidate, e.splits, out, original=e.champion, class_names=e.store.classes,
                       forget_classes=e.classes)


# ------------------------------------------------------------------------------------ GANs
def gan_metrics(e: Evaluation) -> Metrics:
    """Class share / D-score MIA and classifier-feature FID relative to the previous champion."""
    metrics = {}
    for group, s in kind_splits(e.splits, e.classes, e.item_ids).items():
        m = gan_production_metrics(e.candidate, s, forget_classes=e.classes if group == "class" else (),
                                   champion=e.champion, n=e.settings.gan_samples, seed=e.settings.seed)
        metrics[group] = {**m, "forget_set_size": float(len(s.forget))}
    return metrics


def gan_report(e: Evaluation, out: Path) -> dict[str, Path]:
    """What the candidate generates (never a forget-set image), beside the champion's."""
    return {"samples": save_sample_grid(e.candidate, out / "samples.png"),
            "samples_before": save_sample_grid(e.champion, out / "samples_before.png")}


# ------------------------------------------------------------------------- language models
def lm_metrics(e: Evaluation) -> Metrics:
    """Fact recall beyond the guess rate, retain ROUGE-L and perplexity vs the previous champion."""
    from unlearn_ops.data.facts import world_of_store
    from unlearn_ops.verify import lm  # lazy: transformers is slow to import

    parts = kind_splits(e.splits, e.classes, e.item_ids)
    if "class" in parts:
        raise ValueError("language models serve item requests (samples, subject), not class deletions")
    texts = lm.rt_snippets(e.settings.ppl_snippets) if e.settings.ppl_snippets else ()
    return {"items": lm.production_metrics(e.candidate, parts["items"], world_of_store(e.store), champion=e.champion,
                                           ppl_texts=texts, seed=e.settings.seed)}


def no_report(e: Evaluation, out: Path) -> dict[str, Path]:
    """A language model's metrics are its report (generated answers would repeat the subject's facts)."""
    return {}
