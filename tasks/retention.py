"""Retire the model versions trained on forgotten data, and delete their weights after a grace period.

After a batch promotes version N, every earlier version of the model was trained on the forget set
(or derived from one that was). Each one

- loses its aliases and gets the tags `retired_by=<batch>`, `contains_forgotten_data=true`,
  `retired_at`, `weights_delete_after` (now + `retention.grace_days` of the batch's request kind);
- stops loading: `load_version` refuses it (tasks/registry.py), and so does plain
  `mlflow.pyfunc.load_model("models:/<name>/<v>")`, because its code file is replaced by
  tasks/pyfunc_retired.py, which raises the message written to `RETIRED.json` in its `model_dir`;
- loses its weights once the grace period ends (at once for subject / samples requests): every
  file of the logged model's `model_dir` but RETIRED.json, and weight files among its run's
  artifacts, through MLflow's artifact repository API (local and served artifact stores alike).
  The version itself, its tags, metrics and lineage stay: the registry keeps the proof.

`purge_expired` deletes the weights whose grace period has ended; every batch calls it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from prefect import task

from tasks.registry import WEIGHT_FILES_TAG, WEIGHT_SUFFIXES, is_registered, retired_message, tracking_uri

log = logging.getLogger(__name__)
RETIRED_FILE = "RETIRED.json"
TOMBSTONE = Path(__file__).with_name("pyfunc_retired.py")


def grace_days_for(params: dict[str, Any], kinds: Iterable[str]) -> int:
    """Days a retired version's weights stay: the shortest of the batch's request kinds (a
    person's erasure cannot wait for a capability's rollback window). Unlisted kinds: 0."""
    table = (params.get("retention") or {}).get("grace_days") or {}
    days = [int(table.get(kind, 0)) for kind in kinds]
    if any(d < 0 for d in days):
        raise ValueError(f"retention.grace_days must be >= 0: {table}")
    return min(days, default=0)


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri())


def _files(repo: Any, path: str | None = None) -> list[str]:
    out = []
    for f in repo.list_artifacts(path):
        out += _files(repo, f.path) if f.is_dir else [f.path]
    return out


def _pyfunc_layout(repo: Any) -> tuple[str, str]:
    """The logged model's code file name and its `model_dir` artifact folder, from its MLmodel."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = yaml.safe_load(Path(repo.download_artifacts("MLmodel", tmp)).read_text())
    flavor = spec["flavors"]["python_function"]
    code = flavor.get("model_code_path")
    if not code:
        raise ValueError("not a model-from-code pyfunc (no model_code_path in MLmodel)")
    return Path(code).name, flavor["artifacts"]["model_dir"]["path"]


def _write_tombstone(repo: Any, model: str, version: str, tags: dict[str, str]) -> None:
    """RETIRED.json (what the error says) in the model_dir, and the code that raises it."""
    code, model_dir = _pyfunc_layout(repo)
    info = {"model": model, "version": version, **tags, "message": retired_message(model, version, tags)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / RETIRED_FILE).write_text(json.dumps(info, indent=2))
        repo.log_artifact(str(Path(tmp) / RETIRED_FILE), model_dir)
        (Path(tmp) / code).write_text(TOMBSTONE.read_text())
        repo.log_artifact(str(Path(tmp) / code))  # replaces the serving code: loading now raises


def _delete_weights(client: MlflowClient, name: str, mv: Any) -> list[str]:
    """Delete the version's weights (logged model + run artifacts); returns the deleted paths."""
    deleted = []
    model_uri = client.get_model_version_download_uri(name, mv.version)
    repo = get_artifact_repository(model_uri)
    _, model_dir = _pyfunc_layout(repo)
    for path in _files(repo, model_dir):
        if Path(path).name != RETIRED_FILE:
            repo.delete_artifacts(path)
            deleted.append(f"{model_uri}/{path}")
    if mv.run_id:
        run_repo = get_artifact_repository(client.get_run(mv.run_id).info.artifact_uri)
        for path in _files(run_repo):
            if path.endswith(WEIGHT_SUFFIXES):
                run_repo.delete_artifacts(path)
                deleted.append(f"runs:/{mv.run_id}/{path}")
    tags = {**dict(mv.tags or {}), "weights_deleted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_tombstone(repo, name, str(mv.version), tags)  # the message now says the weights are gone
    client.set_model_version_tag(name, mv.version, "weights_deleted_at", tags["weights_deleted_at"])
    log.info("deleted the weights of retired %s v%s (%d files)", name, mv.version, len(deleted))
    return deleted


def retire_superseded(model: str, new_version: str, batch_id: str, grace_days: int,
                      now: datetime | None = None) -> list[dict[str, Any]]:
    """Retire every version of `model` older than `new_version`; delete weights now when the grace is 0.
    Idempotent: a version retired earlier keeps its first `retired_by` and the earlier deadline."""
    client = _client()
    now = now or datetime.now(UTC)
    deadline = now + timedelta(days=grace_days)
    out = []
    for mv in sorted(client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version)):
        if int(mv.version) >= int(new_version):
            continue
        for alias in list(mv.aliases or []):
            client.delete_registered_model_alias(model, alias)
        old = dict(mv.tags or {})
        if old.get("weights_delete_after"):  # retired before: the earlier deadline wins
            deadline_v = min(deadline, datetime.fromisoformat(old["weights_delete_after"]))
        else:
            deadline_v = deadline
        tags = {"retired_by": old.get("retired_by", batch_id), "contains_forgotten_data": "true",
                "retired_at": old.get("retired_at", now.isoformat(timespec="seconds")),
                "weights_delete_after": deadline_v.isoformat(timespec="seconds")}
        changed = {k: v for k, v in tags.items() if old.get(k) != v}
        if changed and not old.get("weights_deleted_at"):  # tombstone first, tags after: a rerun completes it
            repo = get_artifact_repository(client.get_model_version_download_uri(model, mv.version))
            _write_tombstone(repo, model, str(mv.version), {**old, **tags})
        for k, v in changed.items():
            client.set_model_version_tag(model, mv.version, k, v)
        entry = {"version": str(mv.version), "aliases_removed": list(mv.aliases or []), **tags}
        if deadline_v <= now and not old.get("weights_deleted_at"):
            entry["deleted"] = _delete_weights(client, model, client.get_model_version(model, mv.version))
        out.append(entry)
    return out


def purge_expired(model: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Delete the weights of every retired version of `model` whose grace period has ended."""
    client = _client()
    now = now or datetime.now(UTC)
    out = []
    for mv in client.search_model_versions(f"name = '{model}'"):
        tags = dict(mv.tags or {})
        if not tags.get("retired_by") or tags.get("weights_deleted_at"):
            continue
        if datetime.fromisoformat(tags["weights_delete_after"]) > now:
            continue
        out.append({"version": str(mv.version), "deleted": _delete_weights(client, model, mv)})
    return out


def _weight_files_of(tags: dict[str, str]) -> dict[str, str]:
    """A version's weight files (file -> sha256); versions registered before they were recorded
    give their build's `weights_sha256`."""
    if tags.get(WEIGHT_FILES_TAG):
        return json.loads(tags[WEIGHT_FILES_TAG])
    return {"model.safetensors": tags["weights_sha256"]} if tags.get("weights_sha256") else {}


def deleted_weight_files(models: Iterable[str]) -> dict[str, str]:
    """sha256 -> what it was, for every weight file of a version whose weights were deleted: no
    copy of them may remain anywhere the project keeps things (the erasure scan searches for them).
    A file that a version still kept holds byte for byte is not one of them: it is what that version
    serves (e.g. a sharded model's checkpoints before the retrained slice, which never saw the
    forgotten samples)."""
    client = _client()
    deleted: dict[str, str] = {}
    kept: set[str] = set()
    for model in models:
        if not is_registered(model):
            continue
        for mv in client.search_model_versions(f"name = '{model}'"):
            tags = dict(mv.tags or {})
            files = _weight_files_of(tags)
            if not tags.get("weights_deleted_at"):
                kept.update(files.values())
                continue
            deleted.update({sha: f"{model} v{mv.version} weights ({f}), deleted {tags['weights_deleted_at']}"
                            for f, sha in files.items()})
    return {sha: what for sha, what in deleted.items() if sha not in kept}


# ------------------------------------------------------------------ the deletion batch's steps
@task(name="retire-superseded", retries=2, retry_delay_seconds=2)
def retire_task(model: str, new_version: str, batch_id: str, grace_days: int) -> list[dict[str, Any]]:
    """`retire_superseded`, each version's entry with `weights_deleted_at` from its tags: the state,
    which a rerun after a crash reports as the first run would (the action may be done already)."""
    retired = retire_superseded(model, new_version, batch_id, grace_days)
    client = _client()
    return [{**r, "weights_deleted_at": (client.get_model_version(model, r["version"]).tags or {})
             .get("weights_deleted_at")} for r in retired]


@task(name="purge-expired", retries=2, retry_delay_seconds=2)
def purge_expired_task(models: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`purge_expired` for every registered model among `models` (every batch runs it)."""
    return {m: purge_expired(m) for m in models if is_registered(m)}
