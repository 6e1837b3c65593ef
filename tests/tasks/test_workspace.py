"""The workspace refuses a params.yaml whose certificates could not hold."""

from pathlib import Path

import pytest
import yaml

from tasks.workspace import ConfigError, Workspace

ROOT = Path(__file__).resolve().parents[2]


def workspace(tmp_path: Path, models: dict) -> Workspace:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": models}))
    return Workspace.at(tmp_path)


@pytest.mark.parametrize("other", ["data/store/fmnist", "./data/store/../store/fmnist/"])
def test_two_models_on_one_store_are_refused(tmp_path, other):
    # a GAN built on the classifier's store: a request naming the classifier would leave the GAN serving
    ws = workspace(tmp_path, {"fmnist-classifier": {"store_dir": "data/store/fmnist"},
                              "fmnist-gan": {"store_dir": other, "family": "gan"}})
    with pytest.raises(ConfigError, match="models.fmnist-classifier and models.fmnist-gan are trained on the same store"):
        ws.served_models()
    with pytest.raises(ConfigError, match="same store"):
        ws.store_for("fmnist-classifier")


def test_an_absolute_path_to_the_same_store_is_the_same_store(tmp_path):
    ws = workspace(tmp_path, {"a": {"store_dir": "s"}, "b": {"store_dir": str(tmp_path / "s")}})
    with pytest.raises(ConfigError, match="models.a and models.b"):
        ws.served_models()


def test_a_store_each_is_accepted(tmp_path):
    ws = workspace(tmp_path, {"a": {"store_dir": "data/store/a"}, "b": {"store_dir": "data/store/ab"}, "c": {}})
    assert sorted(ws.served_models()) == ["a", "b", "c"]


def test_the_shipped_params_give_each_model_its_own_store():
    models = Workspace.at(ROOT).served_models()
    assert len({m["store_dir"] for m in models.values()}) == len(models) >= 4
