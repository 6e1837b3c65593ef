"""MLflow tracking and registry: log a model directory, register it, move aliases, load by alias.

Aliases: `champion` is what serving loads; `candidate` is the latest produced version. Every
version carries lineage tags (base version, batch, requests, forget-set hash, method, verdict).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task
from torch import nn

from tasks.families import serving
from tasks.faults import fault_point
from unlearn_ops import families
from unlearn_ops.data.store import SampleStore
from unlearn_ops.models import load_any
from unlearn_ops.models.lm import META as LM_META
from unlearn_ops.utils import sha256_file

log = logging.getLogger(__name__)
CHAMPION, CANDIDATE = "champion", "candidate"


class RetiredModelError(RuntimeError):
    """A version retired because it was trained on data since forgotten (tasks/retention.py)."""


def retired_message(name: str, version: str, tags: dict[str, str]) -> str:
    return (f"{name} v{version} was retired by batch {tags.get('retired_by')} (it was trained on data since "
            f"forgotten); weights " + (f"deleted {tags['weights_deleted_at']}" if tags.get("weights_deleted_at")
                                       else f"kept for a rollback until {tags.get('weights_delete_after')}"))


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def ensure_experiment(name: str) -> str:
    """Create the experiment with artifacts beside the sqlite DB (not wherever the cwd is)."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = tracking_uri()
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=location)


# Files that hold a model's weights (a retired version's are deleted; the erasure scan searches for them).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".gguf", ".onnx", ".h5", ".npz", ".npy")
WEIGHT_FILES_TAG = "weight_files_sha256"  # JSON {file in the model folder: sha256}, on every version


def weight_files(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every weight file in a model folder, by its path inside the folder."""
    d = Path(model_dir)
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}


def log_and_register(model_dir: str | Path, *, name: str, family: str, experiment: str, run_name: str,
                     params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                     tags: dict[str, str] | None = None, artifacts: Sequence[str | Path] = ()) -> str:
    """Log `model_dir` (what the family saves) as a pyfunc model (the code that serves its
    `family`, tasks/families.py) and register a new version of `name`; returns the version number."""
    served = serving(family)
    tags = {WEIGHT_FILES_TAG: json.dumps(weight_files(model_dir), sort_keys=True), **(tags or {})}
    exp_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.set_tags(tags)
        example, signature = served.example(model_dir)
        info = mlflow.pyfunc.log_model(name="model", python_model=str(served.pyfunc),
                                       artifacts={"model_dir": str(model_dir)}, signature=signature,
                                       input_example=example, pip_requirements=served.requirements())
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        log.info("registered %s version %s (run %s)", name, version.version, run.info.run_id)
    client = MlflowClient(tracking_uri())
    client.update_registered_model(name, description=served.description(name))
    client.update_model_version(name, version.version, description=version_description(tags))
    return str(version.version)


def version_description(tags: dict[str, str], promoted: bool = False) -> str:
    """What a version is, from its lineage tags, e.g. `batch B: finetune → retrain (promoted: retrain)`."""
    if tags.get("lineage") == "deletion-batch":
        path = tags.get("fallback_path", tags.get("method", "")).replace(" -> ", " → ")
        method = tags.get("method", "")
        if promoted:
            outcome = f"promoted: {method}"
        elif tags.get("verdict") == "pass":
            outcome = f"{method} passed the gates; candidate, not yet promoted"
        else:
            outcome = f"no method passed the gates; {method} kept for the audit, not promoted"
        regression = f"; utility regression: {tags['utility_regression']}" if tags.get("utility_regression") else ""
        return f"batch {tags.get('batch_id')}: {path} ({outcome}{regression})"
    if tags.get("lineage") == "build":
        data = f" on {tags['dataset']}" if tags.get("dataset") else ""
        commit = f" at commit {tags['git_commit'][:12]}" if tags.get("git_commit") not in (None, "unknown") else ""
        return f"build: {tags.get('method', 'train')}{data}{commit}"
    return ""


def describe_promoted(name: str, version: str) -> None:
    """The version's description after its promotion to `champion`."""
    client = MlflowClient(tracking_uri())
    tags = dict(client.get_model_version(name, version).tags or {})
    client.update_model_version(name, version, description=version_description(tags, promoted=True))


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient(tracking_uri()).set_registered_model_alias(name, alias, version)


def version_by_alias(name: str, alias: str) -> Any | None:
    """The ModelVersion behind `name@alias`, or None when the model or alias does not exist."""
    try:
        return MlflowClient(tracking_uri()).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def is_registered(name: str) -> bool:
    try:
        MlflowClient(tracking_uri()).get_registered_model(name)
        return True
    except MlflowException:
        return False


def find_version(name: str, tag: str, value: str) -> str | None:
    """The newest version of `name` whose tag `tag` equals `value` (idempotency look-ups)."""
    if not is_registered(name):
        return None
    found = MlflowClient(tracking_uri()).search_model_versions(f"name = '{name}' and tag.`{tag}` = '{value}'")
    newest = max((int(v.version) for v in found), default=None)
    return None if newest is None else str(newest)


def registered_build(name: str, weights_sha256: str) -> str | None:
    """The version that already holds these weights (re-aliased `champion` if the alias is gone),
    or None: what makes a build's register stage idempotent."""
    existing = find_version(name, "weights_sha256", weights_sha256)
    if existing:
        retired = MlflowClient(tracking_uri()).get_model_version(name, existing).tags.get("retired_by")
        if version_by_alias(name, CHAMPION) is None and not retired:  # a retired version never comes back
            set_alias(name, CHAMPION, existing)
        print(f"{name} weights already registered as version {existing}")
    return existing


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def register_build(directory: str | Path, *, name: str, family: str, experiment: str, run_name: str, store: SampleStore,
                   params: dict[str, Any], metrics: dict[str, Any], tags: dict[str, str] | None = None,
                   artifacts: Sequence[str | Path] = ()) -> str:
    """A build's register stage: idempotent on the weights (`registered_build`), loads the folder
    first (as its `family` loads) so a broken one fails here and not in serving, logs it with the lineage every build
    carries (weights, data manifest, commit, training seconds) plus `tags`, and makes it `champion`."""
    directory = Path(directory)
    weights_hash = sha256_file(directory / "model.safetensors")
    existing = registered_build(name, weights_hash)
    if existing:
        return existing
    families.family(family).load(directory)  # a broken folder fails here, not in serving
    lineage = {"weights_sha256": weights_hash, "lineage": "build", "method": "train", "dataset": store.name,
               "manifest_sha256": sha256_file(store.manifest_path()), "git_commit": git_commit()}
    if "train_seconds" in metrics:
        lineage["train_seconds"] = f"{metrics['train_seconds']:.1f}"
    version = log_and_register(directory, name=name, family=family, experiment=experiment, run_name=run_name,
                               params=params, metrics=metrics, tags={**lineage, **(tags or {})}, artifacts=artifacts)
    set_alias(name, CHAMPION, version)
    print(f"registered {name} version {version} as {CHAMPION}")
    return version


def load_version(name: str, version_or_alias: str, device: str = "cpu",
                 allow_retired: bool = False) -> tuple[nn.Module, dict, str]:
    """Download `models:/name@alias` (or `/version`) and load it with safetensors. A retired version
    raises RetiredModelError naming the batch; `allow_retired` reads one still in its rollback window."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    if str(version_or_alias).isdigit():
        mv = client.get_model_version(name, str(version_or_alias))
    else:
        mv = client.get_model_version_by_alias(name, version_or_alias)
    if (mv.tags or {}).get("retired_by") and not (allow_retired and not mv.tags.get("weights_deleted_at")):
        raise RetiredModelError(retired_message(name, str(mv.version), dict(mv.tags)))
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp)
        # MLflow stores the artifact under the source folder's own name: find it by its spec file
        # (or, for a language model, by its save_lm metadata)
        found = sorted(Path(local).glob("artifacts/**/spec.json")) + sorted(Path(local).glob(f"artifacts/**/{LM_META}"))
        if not found:
            raise FileNotFoundError(f"models:/{name}/{mv.version} holds no spec.json (not logged by this pipeline?)")
        model, spec = load_any(found[0].parent, device=device)
    return model, spec, str(mv.version)


def registry_summary() -> list[dict[str, Any]]:
    """Every registered model with its versions, aliases and key metrics (for `unlearn status`)."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    out = []
    for rm in client.search_registered_models():
        aliases = {a: v for a, v in (rm.aliases or {}).items()}
        versions = []
        for mv in sorted(client.search_model_versions(f"name = '{rm.name}'"), key=lambda v: int(v.version)):
            run = client.get_run(mv.run_id) if mv.run_id else None
            versions.append({"version": mv.version, "aliases": [a for a, v in aliases.items() if str(v) == str(mv.version)],
                             "tags": dict(mv.tags or {}),
                             "metrics": dict(run.data.metrics) if run else {},
                             "created": mv.creation_timestamp})
        out.append({"name": rm.name, "aliases": aliases, "versions": versions})
    return out


# ------------------------------------------------------------------ a deletion batch's registry steps
@task(name="fetch-champion", retries=2, retry_delay_seconds=2)
def fetch_champion_task(model: str, family: str, out_dir: str) -> str:
    """Save the current `champion` of `model` into `out_dir`; returns its version."""
    champion = version_by_alias(model, CHAMPION)
    if champion is None:
        raise RuntimeError(f"{model} has no `{CHAMPION}` alias: run the build first")
    m, spec, version = load_version(model, str(champion.version))
    families.family(family).save(m, spec, out_dir)
    return version


@task(name="register-candidate", retries=2, retry_delay_seconds=2)
def register_candidate_task(model_dir: str, model: str, family: str, batch_id: str, tags: dict[str, str],
                            metrics: dict[str, float], params: dict[str, Any], artifacts: list[str]) -> str:
    """Register the batch's model as `candidate`. Idempotent: a batch registers at most one version
    per model (looked up by its batch tag), so a resumed batch finds the one it made before (and
    sets the alias a crash may have left unset)."""
    version = find_version(model, "batch_id", batch_id)
    if version is None:
        version = log_and_register(model_dir, name=model, family=family, experiment="deletion-batches",
                                   run_name=batch_id, params=params, metrics=metrics, tags=tags, artifacts=artifacts)
        fault_point("register")  # the version exists, its alias not yet
    set_alias(model, CANDIDATE, version)
    return version


@task(name="promote", retries=2, retry_delay_seconds=2)
def promote_task(model: str, version: str) -> None:
    set_alias(model, CHAMPION, version)
    describe_promoted(model, version)
