"""MLflow: register, alias, load by `models:/name@champion` (safetensors, no pickle), pyfunc predict."""

import mlflow
import numpy as np
import torch

from tasks.registry import (
    CHAMPION,
    find_version,
    load_version,
    log_and_register,
    registry_summary,
    set_alias,
    version_by_alias,
)
from unlearn_ops.models import save_model


def test_register_alias_and_load(tiny_model, tiny_spec, tmp_path, mlflow_tmp, class_splits):
    directory = save_model(tiny_model, tiny_spec, tmp_path / "m")
    version = log_and_register(directory, name="digits-classifier", family="classifier", experiment="test",
                               run_name="t", metrics={"test_accuracy": 0.9}, tags={"weights_sha256": "abc", "method": "train"})
    set_alias("digits-classifier", CHAMPION, version)
    assert str(version_by_alias("digits-classifier", CHAMPION).version) == version
    assert version_by_alias("digits-classifier", "nope") is None
    assert find_version("digits-classifier", "weights_sha256", "abc") == version

    model, spec, v = load_version("digits-classifier", CHAMPION)
    assert v == version and spec == tiny_spec
    x = class_splits.test.x[:8]
    assert torch.allclose(model(x), tiny_model(x), atol=1e-6)

    pyfunc = mlflow.pyfunc.load_model("models:/digits-classifier@champion")
    probs = pyfunc.predict(x.numpy())
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == tiny_model(x).argmax(1).numpy()).all()

    summary = registry_summary()
    assert summary[0]["name"] == "digits-classifier" and summary[0]["versions"][0]["aliases"] == [CHAMPION]
