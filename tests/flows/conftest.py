"""A complete, tiny deployment in a temp folder: git + DVC repo, params, digits store, a
registered champion in a temp MLflow. Flow tests run the real flow against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.registry import CHAMPION, log_and_register, set_alias
from tests.conftest import TINY_SPEC
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store
from unlearn_ops.models import save_model

MODEL = "digits-classifier"

PARAMS = {
    "models": {MODEL: {"store_dir": "data/store/digits"}},
    "policy": {MODEL: {"class": ["finetune", "retrain"], "samples": ["finetune", "retrain"],
                       "subject": ["finetune", "retrain"]}},
    "unlearn": {"retrain": {"epochs": 15, "lr": 0.003, "batch_size": 64},
                "finetune": {"epochs": 1, "lr": 0.001, "batch_size": 64}},
    "gates": {"class": {"forget_accuracy": {"max": 0.05}, "retained_test_accuracy_drop": {"max": 0.05}},
              "samples": {"mia_loss_auc": {"max": 0.75}, "test_accuracy_drop": {"max": 0.05}},
              "subject": {"mia_loss_auc": {"max": 0.75}, "test_accuracy_drop": {"max": 0.05}}},
    "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *"},
}


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def make_workspace(root: Path, tiny_model, params: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")], root)
    (root / "params.yaml").write_text(yaml.safe_dump(params or PARAMS))
    for d in ("inbox", "processed", "quarantine"):
        (root / "data" / "requests" / d).mkdir(parents=True, exist_ok=True)
    (root / "data" / "forget_sets").mkdir(parents=True, exist_ok=True)
    build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    directory = save_model(tiny_model, TINY_SPEC, root / "models" / MODEL)
    version = log_and_register(directory, name=MODEL, experiment="build", run_name="build",
                               tags={"lineage": "build", "method": "train"})
    set_alias(MODEL, CHAMPION, version)
    return root


@pytest.fixture()
def workspace(tmp_path, tiny_model, mlflow_tmp, prefect_harness) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)
