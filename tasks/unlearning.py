"""Unlearning and verification tasks. They pass paths and small values, never live models, so
Prefect can record results and retry; GPU work carries the `gpu` tag (a concurrency limit on that
tag serialises jobs on a shared card)."""

from __future__ import annotations

import json
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.methods import is_exact, run_method
from unlearn_ops.models import is_causal_lm, load_any, save_any
from unlearn_ops.models.gan import GAN, save_sample_grid
from unlearn_ops.models.text import TextClassifier, tokenized_splits
from unlearn_ops.training import accuracy
from unlearn_ops.verify import check, production_metrics
from unlearn_ops.verify.gan import gan_production_metrics
from unlearn_ops.verify.gates import for_method
from unlearn_ops.verify.report import report_pngs
from unlearn_ops.verify.utility import retained_class_part


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@task(name="unlearn", tags=["gpu"], cache_policy=NO_CACHE)
def unlearn_task(champion_dir: str, store_dir: str, forget_ids: list[str], method: str, params: dict,
                 device: str, out_dir: str) -> dict[str, Any]:
    """Run one method; returns {method, seconds, model_dir | error, details, log}."""
    model, spec = load_any(champion_dir)
    store = SampleStore(store_dir)
    try:
        result = run_method(method, model, store.splits(forget_ids), params, device=device)
    except Exception as e:  # a method that cannot handle this forget set is a failed attempt, not a crash
        return {"method": method, "seconds": 0.0, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=5)}
    save_any(result.model.cpu(), spec, out_dir)
    return {"method": method, "seconds": result.seconds, "model_dir": out_dir,
            "details": _jsonable(result.details), "log": result.log[-20:]}


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


def classifier_metrics(champion: nn.Module, candidate: nn.Module, parts: dict[str, Splits], classes: list[int],
                       seed: int) -> dict[str, dict[str, float]]:
    metrics: dict[str, dict[str, float]] = {}
    if "class" in parts:
        s = parts["class"]
        metrics["class"] = production_metrics(
            candidate, s, forget_classes=classes, seed=seed,
            reference_retained_test_accuracy=accuracy(champion, retained_class_part(s.test, classes)))
    if "items" in parts:
        s = parts["items"]
        metrics["items"] = production_metrics(candidate, s, reference_test_accuracy=accuracy(champion, s.test), seed=seed)
    return metrics


def gan_metrics(champion: GAN, candidate: GAN, parts: dict[str, Splits], classes: list[int], seed: int,
                n: int) -> dict[str, dict[str, float]]:
    """Class share / D-score MIA and classifier-feature FID relative to the previous champion."""
    metrics = {}
    for group, s in parts.items():
        m = gan_production_metrics(candidate, s, forget_classes=classes if group == "class" else (),
                                   champion=champion, n=n, seed=seed)
        metrics[group] = {**m, "forget_set_size": float(len(s.forget))}
    return metrics


def lm_metrics(champion: nn.Module, candidate: nn.Module, parts: dict[str, Splits], store: SampleStore, seed: int,
               ppl_snippets: int) -> dict[str, dict[str, float]]:
    """Fact recall beyond the guess rate, retain ROUGE-L and perplexity vs the previous champion."""
    from unlearn_ops.data.facts import world_of_store
    from unlearn_ops.verify import lm

    if "class" in parts:
        raise ValueError("language models serve item requests (samples, subject), not class deletions")
    texts = lm.rt_snippets(ppl_snippets) if ppl_snippets else ()
    return {"items": lm.production_metrics(candidate, parts["items"], world_of_store(store), champion=champion,
                                           ppl_texts=texts, seed=seed)}


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(champion_dir: str, candidate_dir: str, store_dir: str, forget_ids: list[str], classes: list[int],
                item_ids: list[str], kinds: list[str], gates: dict[str, dict], seed: int = 0,
                method: str | None = None, gan_samples: int = 2000, ppl_snippets: int = 64,
                verify_retain: int = 0) -> dict[str, Any]:
    """Production metrics per request kind, checked against that kind's gates (as they apply to
    `method`: an exact method skips the statistical-power gates). The model's family (classifier,
    text, GAN or language model) decides which metrics; `gates` must be that family's section of params.yaml."""
    if method is not None:
        gates = {kind: for_method(g, exact=is_exact(method)) for kind, g in gates.items()}
    champion, _ = load_any(champion_dir)
    candidate, _ = load_any(candidate_dir)
    store = SampleStore(store_dir)
    full = store.splits(forget_ids)
    is_gan, is_lm = isinstance(candidate, GAN), is_causal_lm(candidate)
    if verify_retain and not (is_gan or is_lm) and len(full.retain) > verify_retain:
        # a classifier's retain accuracy and loss plots are reported, never gated: a seeded sample
        # measures them (±1 point at 2 000) at a fraction of the cost of the whole retain set
        full = replace(full, retain=full.retain.sample(verify_retain, seed))
    if isinstance(candidate, TextClassifier):  # the store holds strings; the generic metrics take token IDs
        full = tokenized_splits(candidate, full)
    parts = kind_splits(full, classes, set(item_ids))
    if is_gan:
        metrics = gan_metrics(champion, candidate, parts, classes, seed, gan_samples)
    elif is_lm:
        metrics = lm_metrics(champion, candidate, parts, store, seed, ppl_snippets)
    else:
        metrics = classifier_metrics(champion, candidate, parts, classes, seed)
        for group in metrics.values():  # how many retain samples stand behind retain_accuracy
            group["retain_evaluated"] = float(len(full.retain))
    verdicts = {}
    for kind in sorted(set(kinds)):
        group = "class" if kind == "class" else "items"
        if kind not in gates:
            raise KeyError(f"no gates configured for request kind {kind!r} (params.yaml `gates.{kind}`)")
        verdicts[kind] = check(metrics.get(group, {}), gates[kind]).to_dict()
    passed = all(v["passed"] for v in verdicts.values())
    out = Path(candidate_dir) / "report"
    if is_gan:  # what the candidate generates (never a forget-set image), beside the champion's
        reports = {"samples": save_sample_grid(candidate, out / "samples.png"),
                   "samples_before": save_sample_grid(champion, out / "samples_before.png")}
    elif is_lm:  # the metrics are the report (generated answers would repeat the subject's facts)
        reports = {}
    else:  # ROC, loss histograms and per-class bars (numbers only, no forget-set pixels)
        reports = report_pngs(candidate, full, out, original=champion, class_names=store.classes,
                              forget_classes=classes)
    return {"passed": passed, "metrics": _jsonable(metrics), "gates": verdicts,
            "reports": {k: str(v) for k, v in reports.items()}}
