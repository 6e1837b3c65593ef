"""`gan_retrain` (exact GAN unlearning) on the tiny MNIST GAN: contract and behaviour."""

import pytest
import torch

from tests import gan_helpers as H
from tests.methods.contract import assert_same_state, check_contract
from unlearn_ops.methods import METHODS, is_exact, run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.models import state_fingerprint
from unlearn_ops.models.gan import GAN

NAME = "gan_retrain"
FAST = {"epochs": 2, "batch_size": 32, "lr_g": 2e-3, "lr_d": 5e-4, "reference_epochs": 1, "reference_lr": 3e-3}


def test_registered_and_exact():
    assert METHODS[NAME].__name__ == "unlearn_ops.methods.gan_retrain"
    assert is_exact(NAME)


def test_contract():
    check_contract(NAME, H.tiny_gan(), H.class_splits(), FAST)


def test_starts_from_scratch_and_refits_the_reference():
    gan = H.tiny_gan()
    splits = H.class_splits()
    new = run_method(NAME, gan, splits, FAST, device="cpu").model
    assert isinstance(new, GAN) and new.spec() == gan.spec()
    # a fresh start: G's weights are not the trained ones nudged, they are another solution
    old_g, new_g = state_fingerprint(gan.generator), state_fingerprint(new.generator)
    assert not any(torch.equal(old_g[k], new_g[k]) for k in old_g if old_g[k].is_floating_point())
    # the reference classifier was refitted on the retained digit only: it never predicts the forgotten one
    preds = new.reference(splits.forget.x).argmax(1)
    assert (preds != H.FORGET_CLASS).float().mean() > 0.9
    assert all(not p.requires_grad for p in new.reference.parameters()), "the attached reference stays frozen"


def test_reference_kept_when_asked():
    gan = H.tiny_gan()
    new = run_method(NAME, gan, H.item_splits(), {**FAST, "epochs": 0.5, "retrain_reference": False}, device="cpu").model
    assert_same_state(state_fingerprint(gan.reference), state_fingerprint(new.reference))


def test_rejects_a_classifier(tiny_model, class_splits):
    with pytest.raises(NotApplicable, match="GAN container"):
        run_method(NAME, tiny_model, class_splits, FAST, device="cpu")
