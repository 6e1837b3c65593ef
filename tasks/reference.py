"""The retrain reference as a managed MLflow artifact, cached per (base model version, forget-set
hash, seed) and the retrain schedule, and reused by every method evaluated against it.

Retraining from scratch on the retain set is the gold standard of every benchmark and audit,
and by far its most expensive step. Each reference is one run in the MLflow experiment
`retrain-reference`, tagged with its key; its model (spec.json + model.safetensors, no pickle)
is a run artifact, and its training seconds and metrics are logged, so a reuse still reports
honest speed-ups. `reference()` looks the key up first and trains only on a miss.

Benchmarks keep using `bench/references.py` (a file cache keyed by the exact training IDs);
this module is the pipeline's and the audit's cache, which must be shared through MLflow.
Two callers missing the same key at the same moment both train; the look-up then returns the
newest run (identical by seed), so this costs time, never correctness.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from tasks.registry import ensure_experiment, tracking_uri
from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.methods import get_method, run_method
from unlearn_ops.methods.base import make_config
from unlearn_ops.models import load_model, save_model
from unlearn_ops.utils import canonical_json
from unlearn_ops.verify.suite import evaluate

EXPERIMENT = "retrain-reference"
ARTIFACT = "reference"   # run artifact folder holding spec.json + model.safetensors


def forget_set_hash(forget_ids: Sequence[str]) -> str:
    """sha256 of the sorted sample IDs, one per line (order-independent, IDs only)."""
    return hashlib.sha256("\n".join(sorted(forget_ids)).encode()).hexdigest()


def params_hash(params: dict[str, Any] | None) -> str:
    """Hash of the *resolved* retrain Config (defaults filled in): a different schedule is a
    different reference, even when the caller spelled it differently."""
    from dataclasses import asdict

    cfg = make_config(get_method("retrain").Config, params)
    return hashlib.sha256(canonical_json(asdict(cfg)).encode()).hexdigest()[:16]


def reference_key(base_version: str, forget_ids: Sequence[str], seed: int,
                  params: dict[str, Any] | None = None) -> dict[str, str]:
    return {"base_version": str(base_version), "forget_set_hash": forget_set_hash(forget_ids),
            "seed": str(seed), "retrain_params_hash": params_hash({**(params or {}), "seed": seed})}


@dataclass
class Reference:
    model: nn.Module
    run_id: str
    reused: bool
    seconds: float                       # training seconds when it was built (also on reuse)
    metrics: dict[str, float] = field(default_factory=dict)


def find_reference(key: dict[str, str], experiment: str = EXPERIMENT) -> str | None:
    """The newest finished run of `experiment` whose tags equal `key`, or None."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    where = " and ".join(f"tags.{k} = '{v}'" for k, v in sorted(key.items()))
    runs = client.search_runs([exp.experiment_id], filter_string=f"{where} and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def load_reference(run_id: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any], float, dict[str, float]]:
    """Download the run's model folder and load it with safetensors; with its logged numbers."""
    mlflow.set_tracking_uri(tracking_uri())
    run = MlflowClient().get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp)
        model, spec = load_model(Path(local), device=device)
    metrics = dict(run.data.metrics)
    seconds = float(metrics.pop("retrain_seconds", float("nan")))
    return model, spec, seconds, metrics


def reference(base_model: nn.Module, spec: dict[str, Any], splits: Splits, *, base_version: str, seed: int = 0,
              params: dict[str, Any] | None = None, forget_classes: list[int] | None = None,
              device: str = "auto", experiment: str = EXPERIMENT) -> Reference:
    """The retrained model for (base_version, splits.forget, seed, schedule): reused from MLflow
    when logged before, else trained with `run_method("retrain", ...)` and logged."""
    key = reference_key(base_version, splits.forget.ids, seed, params)
    found = find_reference(key, experiment)
    if found:
        model, _, seconds, metrics = load_reference(found)
        return Reference(model, found, True, seconds, metrics)
    result = run_method("retrain", base_model, splits, {**(params or {}), "seed": seed}, device=device)
    model = result.model.cpu().eval()
    metrics = evaluate(model, splits, forget_classes=forget_classes, seed=seed)
    exp_id = ensure_experiment(experiment)
    with tempfile.TemporaryDirectory() as tmp, \
            mlflow.start_run(experiment_id=exp_id, run_name=f"retrain base v{base_version} seed {seed}") as run:
        mlflow.set_tags({**key, "method": "retrain", "forget_size": str(len(splits.forget)),
                         "retain_size": str(len(splits.retain))})
        mlflow.log_params({k: str(v) for k, v in {**(params or {}), "seed": seed}.items()})
        mlflow.log_metrics({"retrain_seconds": result.seconds,
                            **{k: v for k, v in metrics.items() if v == v}})  # NaN is not loggable
        mlflow.log_artifacts(str(save_model(model, spec, Path(tmp) / ARTIFACT)), artifact_path=ARTIFACT)
        run_id = run.info.run_id
    return Reference(model, run_id, False, result.seconds, metrics)


@task(name="retrain-reference", tags=["gpu"], cache_policy=NO_CACHE)  # no retries: training, not I/O
def reference_task(model_dir: str, store_root: str, forget_ids: list[str], base_version: str, seed: int = 0,
                   params: dict[str, Any] | None = None, forget_classes: list[int] | None = None,
                   out_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Paths in, small values out: the reference's run ID, whether it was reused, its metrics,
    and (with `out_dir`) where its model was saved locally."""
    base, spec = load_model(model_dir)
    splits = SampleStore(Path(store_root)).splits(forget_ids)
    ref = reference(base, spec, splits, base_version=base_version, seed=seed, params=params,
                    forget_classes=forget_classes, device=device)
    saved = str(save_model(ref.model, spec, out_dir)) if out_dir else None
    return {"run_id": ref.run_id, "reused": ref.reused, "seconds": ref.seconds, "metrics": ref.metrics,
            "model_dir": saved}
