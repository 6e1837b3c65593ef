"""Unlearning and verification tasks. They pass paths and small values, never live models, so
Prefect can record results and retry; GPU work carries the `gpu` tag (a concurrency limit on that
tag serialises jobs on a shared card)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.methods import is_exact, run_method
from unlearn_ops.models import load_model, save_model
from unlearn_ops.training import accuracy
from unlearn_ops.verify import check, production_metrics
from unlearn_ops.verify.gates import for_method
from unlearn_ops.verify.report import report_pngs
from unlearn_ops.verify.utility import retained_class_part

ITEM_KINDS = ("samples", "subject")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@task(name="unlearn", tags=["gpu"], cache_policy=NO_CACHE)
def unlearn_task(champion_dir: str, store_dir: str, forget_ids: list[str], method: str, params: dict,
                 device: str, out_dir: str) -> dict[str, Any]:
    """Run one method; returns {method, seconds, model_dir | error, details, log}."""
    model, spec = load_model(champion_dir)
    store = SampleStore(store_dir)
    try:
        result = run_method(method, model, store.splits(forget_ids), params, device=device)
    except Exception as e:  # a method that cannot handle this forget set is a failed attempt, not a crash
        return {"method": method, "seconds": 0.0, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=5)}
    save_model(result.model.cpu(), spec, out_dir)
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


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(champion_dir: str, candidate_dir: str, store_dir: str, forget_ids: list[str], classes: list[int],
                item_ids: list[str], kinds: list[str], gates: dict[str, dict], seed: int = 0,
                method: str | None = None) -> dict[str, Any]:
    """Production metrics per request kind, checked against that kind's gates (as they apply to
    `method`: an exact method skips the statistical-power gates)."""
    if method is not None:
        gates = {kind: for_method(g, exact=is_exact(method)) for kind, g in gates.items()}
    champion, _ = load_model(champion_dir)
    candidate, _ = load_model(candidate_dir)
    store = SampleStore(store_dir)
    parts = kind_splits(store.splits(forget_ids), classes, set(item_ids))
    metrics: dict[str, dict[str, float]] = {}
    if "class" in parts:
        s = parts["class"]
        metrics["class"] = production_metrics(
            candidate, s, forget_classes=classes, seed=seed,
            reference_retained_test_accuracy=accuracy(champion, retained_class_part(s.test, classes)))
    if "items" in parts:
        s = parts["items"]
        metrics["items"] = production_metrics(candidate, s, reference_test_accuracy=accuracy(champion, s.test), seed=seed)
    verdicts = {}
    for kind in sorted(set(kinds)):
        group = "class" if kind == "class" else "items"
        if kind not in gates:
            raise KeyError(f"no gates configured for request kind {kind!r} (params.yaml `gates.{kind}`)")
        verdicts[kind] = check(metrics.get(group, {}), gates[kind]).to_dict()
    passed = all(v["passed"] for v in verdicts.values())
    # ROC, loss histograms and per-class bars (numbers only, no forget-set pixels) beside the candidate
    full = store.splits(forget_ids)
    reports = report_pngs(candidate, full, Path(candidate_dir) / "report", original=champion,
                          class_names=store.classes, forget_classes=classes)
    return {"passed": passed, "metrics": _jsonable(metrics), "gates": verdicts,
            "reports": {k: str(v) for k, v in reports.items()}}
