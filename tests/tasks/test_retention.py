"""Retirement: after a promotion every earlier version loses its aliases, is tagged, cannot be
loaded (our loader and plain MLflow pyfunc both name the batch), and loses its weights after the
grace period; the promoted version keeps working."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from tasks.registry import (
    CANDIDATE,
    CHAMPION,
    RetiredModelError,
    load_version,
    log_and_register,
    registered_build,
    set_alias,
    version_by_alias,
)
from tasks.retention import RETIRED_FILE, deleted_weight_files, grace_days_for, purge_expired, retire_superseded
from unlearn_ops.models import save_model
from unlearn_ops.utils import sha256_file

NAME = "digits-classifier"


def register(tiny_model, tiny_spec, tmp_path: Path, n: int) -> list[str]:
    versions = []
    for i in range(n):
        d = save_model(tiny_model, tiny_spec, tmp_path / f"m{i}")
        (tmp_path / f"w{i}.safetensors").write_bytes((d / "model.safetensors").read_bytes())
        (tmp_path / f"r{i}.png").write_bytes(b"\x89PNG report")
        versions.append(log_and_register(d, name=NAME, family="classifier", experiment="t", run_name=f"v{i}",
                                         tags={"weights_sha256": f"w{i}"},
                                         artifacts=[tmp_path / f"w{i}.safetensors", tmp_path / f"r{i}.png"]))
    return versions


def files(name: str, version: str) -> set[str]:
    """Every file of the version's logged model and of its run's artifacts."""
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    roots = [client.get_model_version_download_uri(name, version), client.get_run(mv.run_id).info.artifact_uri]
    return {p.name for r in roots for p in Path(r.removeprefix("file://")).rglob("*") if p.is_file()}


def test_grace_days_take_the_strictest_kind():
    params = {"retention": {"grace_days": {"subject": 0, "samples": 0, "class": 7, "concept": 7}}}
    assert grace_days_for(params, ["class"]) == 7
    assert grace_days_for(params, ["class", "subject"]) == 0
    assert grace_days_for({}, ["class"]) == 0
    with pytest.raises(ValueError, match=">= 0"):
        grace_days_for({"retention": {"grace_days": {"class": -1}}}, ["class"])


def test_retired_versions_cannot_load_and_lose_their_weights(tiny_model, tiny_spec, tmp_path, mlflow_tmp, class_splits):
    v1, v2, v3 = register(tiny_model, tiny_spec, tmp_path, 3)
    set_alias(NAME, CHAMPION, v1)
    set_alias(NAME, CANDIDATE, v2)  # a candidate of a batch that failed its gates
    assert "model.safetensors" in files(NAME, v1) and "w0.safetensors" in files(NAME, v1)
    set_alias(NAME, CHAMPION, v3)  # the batch promotes v3 …
    set_alias(NAME, CANDIDATE, v3)
    retired = retire_superseded(NAME, v3, "batch-42", grace_days=0)  # … and retires the rest

    assert [r["version"] for r in retired] == [v1, v2] and all(r["deleted"] for r in retired)
    client = MlflowClient()
    for v in (v1, v2):
        mv = client.get_model_version(NAME, v)
        assert not mv.aliases
        assert mv.tags["retired_by"] == "batch-42" and mv.tags["contains_forgotten_data"] == "true"
        assert mv.tags["weights_deleted_at"]
        left = files(NAME, v)
        assert not any(f.endswith(".safetensors") for f in left), left
        assert RETIRED_FILE in left and f"r{int(v) - 1}.png" in left  # reports (evidence) stay
    with pytest.raises(RetiredModelError, match=f"{NAME} v{v1} was retired by batch batch-42 .*weights deleted"):
        load_version(NAME, v1)
    with pytest.raises(RuntimeError, match=f"{NAME} v{v1} was retired by batch batch-42 \\(it was trained on data"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{v1}")
    # the new champion is untouched, by both loaders
    assert load_version(NAME, CHAMPION)[2] == v3
    assert mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}").predict(class_splits.test.x[:4].numpy()).shape == (4, 10)
    assert retire_superseded(NAME, v3, "batch-43", grace_days=0)[0]["retired_by"] == "batch-42"  # idempotent


def test_grace_period_keeps_weights_for_a_rollback_then_purges(tiny_model, tiny_spec, tmp_path, mlflow_tmp):
    v1, v2 = register(tiny_model, tiny_spec, tmp_path, 2)
    set_alias(NAME, CHAMPION, v2)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    (entry,) = retire_superseded(NAME, v2, "batch-class", grace_days=7, now=now)
    assert "deleted" not in entry and "model.safetensors" in files(NAME, v1)
    with pytest.raises(RetiredModelError, match="kept for a rollback until 2030-01-08"):
        load_version(NAME, v1)
    with pytest.raises(RuntimeError, match="retired by batch batch-class"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{v1}")
    assert load_version(NAME, v1, allow_retired=True)[2] == v1  # the rollback window

    assert purge_expired(NAME, now=now + timedelta(days=6)) == []
    (purged,) = purge_expired(NAME, now=now + timedelta(days=8))
    assert purged["version"] == v1 and "model.safetensors" not in files(NAME, v1)
    with pytest.raises(RetiredModelError, match="weights deleted"):
        load_version(NAME, v1, allow_retired=True)
    with pytest.raises(RuntimeError, match="weights deleted"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{v1}")
    assert purge_expired(NAME, now=now + timedelta(days=9)) == []


def test_a_subject_batch_shortens_a_rollback_window_and_nothing_revives_a_retired_version(
        tiny_model, tiny_spec, tmp_path, mlflow_tmp):
    v1, v2, v3 = register(tiny_model, tiny_spec, tmp_path, 3)
    retire_superseded(NAME, v2, "batch-class", grace_days=7)
    assert "model.safetensors" in files(NAME, v1)
    set_alias(NAME, CHAMPION, v3)
    first, second = retire_superseded(NAME, v3, "batch-subject", grace_days=0)
    assert first["retired_by"] == "batch-class" and first["deleted"]  # v1 held the subject too
    assert second["retired_by"] == "batch-subject" and second["deleted"]
    MlflowClient().delete_registered_model_alias(NAME, CHAMPION)
    assert registered_build(NAME, "w0") == v1 and version_by_alias(NAME, CHAMPION) is None


def test_deleted_weight_files_are_those_no_kept_version_holds(tiny_model, tiny_spec, tmp_path, mlflow_tmp):
    """What the erasure scan searches for once v1's weights are deleted: v1's weight files, named,
    but not a file v2 still holds byte for byte (a sharded model's untouched checkpoints), and
    nothing while v1 is within its rollback window."""
    d1 = save_model(tiny_model, tiny_spec, tmp_path / "v1")
    (d1 / "shard_state.safetensors").write_bytes(b"checkpoints before the retrained slice")
    v1 = log_and_register(d1, name=NAME, family="classifier", experiment="t", run_name="v1")
    model2 = copy.deepcopy(tiny_model)  # another model: the retrained members
    with torch.no_grad():
        next(model2.parameters()).add_(1.0)
    d2 = save_model(model2, tiny_spec, tmp_path / "v2")
    (d2 / "shard_state.safetensors").write_bytes(b"checkpoints before the retrained slice")
    v2 = log_and_register(d2, name=NAME, family="classifier", experiment="t", run_name="v2")
    retire_superseded(NAME, v2, "batch-class", grace_days=7)
    assert deleted_weight_files([NAME]) == {}  # kept for a rollback: not yet to be searched for

    retire_superseded(NAME, v2, "batch-subject", grace_days=0)
    found = deleted_weight_files([NAME, "never-registered"])
    assert list(found) == [sha256_file(d1 / "model.safetensors")]
    assert found[sha256_file(d1 / "model.safetensors")].startswith(f"{NAME} v{v1} weights (model.safetensors)")
