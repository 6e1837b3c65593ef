"""The DCGAN container: shapes, safe save / load with the nested reference, seeded training."""

import json

import pytest
import torch

from tests import gan_helpers as H
from unlearn_ops.models import load_model, state_fingerprint
from unlearn_ops.models.gan import (
    GAN,
    GanTrainConfig,
    d_scores,
    generate,
    init_weights,
    load_gan,
    save_gan,
    save_sample_grid,
    train_gan,
)


def test_shapes_and_value_range():
    gan = init_weights(GAN(**H.TINY_GAN), 0).eval()
    x = generate(gan, 5, seed=0)
    assert x.shape == (5, 1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert gan.discriminator(x).shape == (5,)
    assert torch.equal(generate(gan, 5, seed=0), x), "a latent seed fixes the samples"


def test_discriminator_scores_do_not_depend_on_the_batch():
    gan = H.tiny_gan()
    x = H.digits01()["test"].x[:20]
    alone = torch.cat([d_scores(gan, x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(alone, d_scores(gan, x), atol=1e-6)


def test_save_and_load_round_trip_with_the_reference(tmp_path):
    gan = H.tiny_gan()
    folder = save_gan(gan, tmp_path / "gan")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["arch"] == "dcgan" and spec["reference"]["arch"] == "cnn"
    loaded = load_gan(folder)
    before, after = state_fingerprint(gan), state_fingerprint(loaded)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(generate(loaded, 4, seed=1), generate(gan, 4, seed=1))
    model, _ = load_model(folder)  # the generic loader (and so the MLflow registry) reads GANs too
    assert isinstance(model, GAN) and model.reference is not None
    png = save_sample_grid(loaded, tmp_path / "grid.png", n=16, nrow=4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_gan_refuses_a_classifier(tmp_path):
    from unlearn_ops.models import save_model

    save_model(H.reference_classifier(), H.TINY_REF, tmp_path / "cnn")
    with pytest.raises(ValueError, match="not a dcgan"):
        load_gan(tmp_path / "cnn")


def test_train_gan_is_seeded_and_returns_seconds():
    images = H.digits01()["train"].x[:128]
    cfg = GanTrainConfig(epochs=2, batch_size=32, seed=3, device="cpu")
    runs = []
    for _ in range(2):
        gan = init_weights(GAN(**H.TINY_GAN), 0)
        seconds = train_gan(gan.generator, gan.discriminator, images, cfg)
        runs.append(state_fingerprint(gan))
        assert seconds > 0 and not gan.generator.training
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    fresh = state_fingerprint(init_weights(GAN(**H.TINY_GAN), 0))
    assert not torch.equal(fresh["generator.fc.0.weight"], runs[0]["generator.fc.0.weight"])
