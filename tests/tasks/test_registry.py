"""MLflow: register, alias, load by `models:/name@champion` (safetensors, no pickle), pyfunc predict."""

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient

from tasks.registry import (
    CHAMPION,
    find_version,
    load_version,
    log_and_register,
    promote_task,
    registry_summary,
    set_alias,
    version_by_alias,
    version_description,
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


BATCH_TAGS = {"lineage": "deletion-batch", "batch_id": "batch-B", "base_version": "1", "method": "retrain",
              "fallback_path": "finetune -> retrain", "verdict": "pass"}


def test_a_version_carries_a_signature_an_input_example_and_says_what_it_is(tiny_model, tiny_spec, tmp_path,
                                                                             mlflow_tmp, recwarn):
    directory = save_model(tiny_model, tiny_spec, tmp_path / "m")
    version = log_and_register(directory, name="digits-classifier", family="classifier", experiment="t",
                               run_name="batch-B", tags=BATCH_TAGS)
    assert not [w for w in recwarn if "type hint" in str(w.message)]  # MLflow's "Add type hints to predict"
    client = MlflowClient()
    described = client.get_model_version("digits-classifier", version).description
    assert described == "batch batch-B: finetune → retrain (retrain passed the gates; candidate, not yet promoted)"
    promote_task.fn("digits-classifier", version)
    assert client.get_model_version("digits-classifier", version).description == \
        "batch batch-B: finetune → retrain (promoted: retrain)"
    about = client.get_registered_model("digits-classifier").description
    assert "Image classifier" in about and "tasks/pyfunc_classifier.py" in about and "champion" in about

    info = mlflow.models.get_model_info(f"models:/digits-classifier/{version}")
    (images,) = info.signature.inputs.inputs
    assert images.type == np.dtype(np.float32) and images.shape == (-1, 1, 8, 8)
    assert info.signature.outputs.inputs[0].shape == (-1, 10)
    example = mlflow.pyfunc.load_model(f"models:/digits-classifier/{version}").input_example
    assert example.shape == (2, 1, 8, 8) and 0 <= example.min() and example.max() <= 1


def test_a_failed_candidate_says_it_was_not_promoted():
    tags = {**BATCH_TAGS, "verdict": "fail", "fallback_path": "finetune -> retrain", "utility_regression": ""}
    assert version_description(tags) == ("batch batch-B: finetune → retrain (no method passed the gates; retrain "
                                         "kept for the audit, not promoted)")
    regressed = version_description({**BATCH_TAGS, "utility_regression": "test_accuracy_drop 0.07 > 0.05"}, True)
    assert regressed.endswith("(promoted: retrain; utility regression: test_accuracy_drop 0.07 > 0.05)")
    assert version_description({"lineage": "build", "method": "train", "dataset": "fashion-mnist"}) == \
        "build: train on fashion-mnist"


def test_a_generator_declares_latents_in_and_images_out(tmp_path, mlflow_tmp):
    from unlearn_ops.models.gan import GAN, save_gan

    directory = save_gan(GAN(z_dim=8, g_width=4, d_width=4), tmp_path / "gan")
    version = log_and_register(directory, name="gan", family="gan", experiment="t", run_name="build",
                               tags={"lineage": "build", "method": "train"})
    signature = mlflow.models.get_model_info(f"models:/gan/{version}").signature
    assert signature.inputs.inputs[0].shape == (-1, 8) and signature.outputs.inputs[0].shape == (-1, 1, 28, 28)
    served = mlflow.pyfunc.load_model(f"models:/gan/{version}")
    assert np.asarray(served.predict(served.input_example)).shape == (2, 1, 28, 28)
    assert "latent" in MlflowClient().get_registered_model("gan").description
