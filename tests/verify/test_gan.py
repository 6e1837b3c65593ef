"""GAN verification on the tiny MNIST GAN: class share, D-score MIA, classifier-feature FID, downstream test."""

import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from tests import gan_helpers as H
from unlearn_ops.models.gan import GAN, generate, init_weights
from unlearn_ops.verify.gan import (
    ClassifierFeatures,
    class_histogram,
    class_share,
    classifier_fid,
    d_mia,
    downstream_accuracy,
    feature_fid,
    gan_metrics,
    gan_production_metrics,
)


def closed_form_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook Fréchet distance with scipy's sqrtm, to check torchmetrics' eigenvalue route."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU features make the covariances singular; sqrtm still works
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_feature_fid_is_the_frechet_distance_of_the_classifier_features():
    ref = H.reference_classifier()
    real, fake = H.digits01()["train"].x[:200], generate(H.tiny_gan(), 200, seed=3)
    with torch.no_grad():
        fa, fb = ref.embed(real).double().numpy(), ref.embed(fake).double().numpy()
    assert feature_fid(real, fake, ref) == pytest.approx(closed_form_fid(fa, fb), rel=1e-3, abs=1e-4)
    assert ClassifierFeatures(ref).num_features == ref.head.in_features


def test_fid_ranks_real_data_then_trained_gan_then_untrained_gan():
    d = H.digits01()
    real = d["train"].x
    trained = H.tiny_gan()
    untrained = init_weights(GAN(**H.TINY_GAN), 1).eval().attach_reference(H.reference_classifier(), H.TINY_REF)
    real_vs_real = feature_fid(real, torch.cat([d["test"].x, d["nonmember"].x]), H.reference_classifier())
    assert real_vs_real < classifier_fid(trained, real, n=300) < classifier_fid(untrained, real, n=300)


def test_class_share_and_histogram_agree():
    gan = H.tiny_gan()
    hist = class_histogram(gan, num_classes=2, n=500, seed=1)
    assert sum(hist) == pytest.approx(1.0)
    assert class_share(gan, [H.FORGET_CLASS], n=500, seed=1) == pytest.approx(hist[H.FORGET_CLASS])
    assert class_share(gan, [0, 1], n=500, seed=1) == 1.0
    assert 0.1 < hist[H.FORGET_CLASS] < 0.9, "the tiny GAN should make both digits"


def test_d_mia_is_chance_for_indistinguishable_sets_and_sees_memorised_items():
    gan = H.tiny_gan()
    part = H.digits01()["nonmember"]
    twin = type(part)(tuple(f"copy/{i}" for i in part.ids), part.x.clone(), part.y.clone())
    same = d_mia(gan, part, twin)
    assert same["d_mia_auc"] == pytest.approx(0.5)
    assert same["d_forget_mean"] == pytest.approx(same["d_nonmember_mean"])
    # a discriminator that memorised a handful of items (accept them, reject other real digits)
    # ranks them above non-members of the same digits
    items, others = H.digits01()["train"].sample(16, seed=0), H.digits01()["test"]
    memorised = GAN(**H.TINY_GAN)
    memorised.load_state_dict(gan.state_dict(), strict=False)  # G and D only
    opt = torch.optim.Adam(memorised.discriminator.parameters(), lr=1e-3)
    x = torch.cat([items.x, others.x])
    y = torch.cat([torch.ones(len(items)), torch.zeros(len(others))])
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(memorised.discriminator(x), y).backward()
        opt.step()
    memorised.eval()
    assert d_mia(memorised, items, part)["d_mia_auc"] > 0.8


def test_downstream_classifier_trained_on_generated_digits_reads_real_ones():
    out = downstream_accuracy(H.tiny_gan(), H.digits01()["test"], n=600, epochs=2, seed=0,
                              exclude_classes=[H.FORGET_CLASS])
    assert out["downstream_test_accuracy"] > 0.8
    assert 0.0 <= out["downstream_retained_test_accuracy"] <= 1.0


def test_gan_metrics_keys_follow_the_request_kind():
    gan = H.tiny_gan()
    item = gan_metrics(gan, H.item_splits(), n=300, reference_fid=10.0)
    assert {"d_mia_auc", "d_forget_mean", "d_generated_mean", "fid", "fid_change"} <= set(item)
    assert "forget_class_share" not in item
    assert item["fid_change"] == pytest.approx(item["fid"] / 10.0 - 1.0)
    klass = gan_metrics(gan, H.class_splits(), forget_classes=[H.FORGET_CLASS], n=300)
    assert 0.0 <= klass["forget_class_share"] <= 1.0


def test_production_metrics_compare_with_the_champion():
    gan = H.tiny_gan()
    same = gan_production_metrics(gan, H.class_splits(), forget_classes=[H.FORGET_CLASS], champion=gan, n=300)
    assert same["fid_change"] == pytest.approx(0.0, abs=1e-6) and same["champion_fid"] == pytest.approx(same["fid"])
    assert {"forget_class_share", "d_mia_auc"} <= set(same)
    untrained = init_weights(GAN(**H.TINY_GAN), 1).eval().attach_reference(H.reference_classifier(), H.TINY_REF)
    worse = gan_production_metrics(untrained, H.item_splits(), champion=gan, n=300)
    assert worse["fid_change"] > 0.5 and "forget_class_share" not in worse


def test_reference_is_required():
    bare = GAN(**H.TINY_GAN).eval()
    with pytest.raises(ValueError, match="reference classifier"):
        class_share(bare, [1], n=10)
