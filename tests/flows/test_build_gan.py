"""The GAN build flows (import → train → register) on MNIST-5k with a tiny schedule and a temp registry."""

import copy

import pytest
from mlflow import MlflowClient

from flows.params import load_params
from unlearn_ops.models.gan import GAN


@pytest.fixture()
def tiny_params(tmp_path, monkeypatch, mlflow_tmp):
    params = copy.deepcopy(load_params())  # the project's params.yaml, shrunk below
    monkeypatch.setenv("UNLEARN_PROJECT_DIR", str(tmp_path))  # store, models, metrics go to tmp
    p = params["gan"]
    p["reference"].update({"epochs": 2, "lr": 3e-3, "widths": [4, 8], "hidden": 16, "min_test_accuracy": 0.5})
    p["gan"].update({"epochs": 0.25, "z_dim": 8, "g_width": 4, "d_width": 4})
    p["eval_samples"] = 200
    p["device"] = "cpu"
    return params


def test_build_gan_trains_registers_and_is_idempotent(tiny_params, prefect_harness, tmp_path):
    from flows.build_gan import METRICS, SAMPLES, gan_import, gan_register, gan_train
    from tasks.registry import CHAMPION, load_version

    summary = gan_import(tiny_params)
    assert summary["dataset"] == "mnist5k" and summary["active"] == 4000
    metrics = gan_train(tiny_params)
    assert metrics["train_seconds"] > 0 and metrics["fid"] > 0
    assert (tmp_path / METRICS).is_file()
    p = tiny_params["gan"]
    assert (tmp_path / "models" / p["model_name"] / SAMPLES).is_file()

    version = gan_register(tiny_params)
    client = MlflowClient()
    mv = client.get_model_version_by_alias(p["model_name"], CHAMPION)
    assert str(mv.version) == version
    run = client.get_run(mv.run_id)
    assert run.data.metrics["train_seconds"] == pytest.approx(metrics["train_seconds"])
    assert SAMPLES in [a.path for a in client.list_artifacts(mv.run_id)]
    gan, spec, _ = load_version(p["model_name"], CHAMPION)
    assert isinstance(gan, GAN) and gan.reference is not None and spec["arch"] == "dcgan"

    assert gan_register(tiny_params) == version, "same weights: no new version"
