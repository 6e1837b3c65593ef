"""The text build flows (import → train → register) on Rotten Tomatoes with a tiny BERT and a temp project folder."""

import copy

import pytest

from flows.params import load_params
from unlearn_ops.models import load_model
from unlearn_ops.models.text import TextClassifier, tiny_text_spec


@pytest.fixture()
def tiny_params(tmp_path, monkeypatch):
    params = copy.deepcopy(load_params())  # the real params.yaml, shrunk below
    monkeypatch.setenv("UNLEARN_PROJECT_DIR", str(tmp_path))  # store, models, metrics go to tmp
    p = params["text"]
    p.update({"encoder": tiny_text_spec()["encoder"], "max_length": 32, "max_train": 300, "max_eval": 200,
              "epochs": 2, "device": "cpu", "min_test_accuracy": 0.0})
    return params


def test_build_text_imports_groups_trains_and_registers(tiny_params, prefect_harness, mlflow_tmp, tmp_path):
    import mlflow

    from flows.build_text import METRICS, text_import, text_register, text_train
    from tasks.registry import CHAMPION, version_by_alias
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.data.text_store import group_ids

    p = tiny_params["text"]
    summary = text_import(tiny_params)
    assert summary["dataset"] == "rt" and summary["active"] > 10000
    store = SampleStore(tmp_path / p["store_dir"])
    assert len(group_ids(store, "enigma")) > 10
    metrics = text_train(tiny_params)
    assert metrics["train_snippets"] == 300 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (tmp_path / METRICS).is_file()
    model, spec = load_model(tmp_path / "models" / p["model_name"])
    assert isinstance(model, TextClassifier) and spec["arch"] == "text" and spec["max_length"] == 32

    version = text_register(tiny_params)
    assert str(version_by_alias(p["model_name"], CHAMPION).version) == version
    probs = mlflow.pyfunc.load_model(f"models:/{p['model_name']}@{CHAMPION}").predict(["a moving, wonderful film"])
    assert probs.shape == (1, 2)
    assert text_register(tiny_params) == version, "same weights: no new version"
