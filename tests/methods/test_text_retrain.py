"""`text_retrain` (exact unlearning for a text classifier) on a tiny BERT: contract and behaviour."""

import pytest
import torch

from tests.conftest import fixture_seed
from tests.methods.contract import check_contract
from tests.text_helpers import corpus_parts
from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import METHODS, is_exact, run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.models import build_model, state_fingerprint
from unlearn_ops.models.text import TextClassifier, fit_head, tiny_text_spec, tokenized_part
from unlearn_ops.training import TrainConfig, accuracy

NAME = "text_retrain"
FAST = {"epochs": 30, "lr": 0.03, "batch_size": 64}


@pytest.fixture(scope="module")
def data():
    return corpus_parts(300, 100)


@pytest.fixture(scope="module")
def original(data) -> TextClassifier:
    """Built as the build does it: a frozen encoder and a head fitted on all training snippets."""
    model = build_model(tiny_text_spec())
    fit_head(model, data[0], TrainConfig(**FAST, seed=fixture_seed(), device="cpu"))
    return model


def text_class_splits(data, cls: int = 1) -> Splits:
    train, _, test, nonmember = data
    return Splits(train.where(train.y == cls), train.where(train.y != cls), test, nonmember, 2)


def test_registered_and_exact():
    assert METHODS[NAME].__name__ == "unlearn_ops.methods.text_retrain"
    assert is_exact(NAME)


def test_contract(original, data):
    check_contract(NAME, original, text_class_splits(data), FAST)


def test_keeps_the_encoder_and_forgets_a_class(original, data):
    splits = text_class_splits(data)
    new = run_method(NAME, original, splits, FAST, device="cpu").model
    old_state, new_state = state_fingerprint(original), state_fingerprint(new)
    encoder = [k for k in old_state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(old_state[k], new_state[k]) for k in encoder), "the encoder is never retrained"
    assert not torch.equal(old_state["head.weight"], new_state["head.weight"])
    forget = tokenized_part(new, splits.forget)
    assert accuracy(original, forget) > 0.9
    assert accuracy(new, forget) == 0.0  # a head fitted on one class only predicts that class


def test_equals_the_build_without_the_forget_set(original, data):
    """Exactness: the same computation as building the model on the retained snippets."""
    train = data[0]
    splits = Splits(train.subset(range(20)), train.subset(range(20, len(train))), data[2], data[3], 2)
    new = run_method(NAME, original, splits, FAST, device="cpu").model
    built = build_model(tiny_text_spec())
    fit_head(built, splits.retain, TrainConfig(**FAST, seed=0, device="cpu"))
    a, b = state_fingerprint(new), state_fingerprint(built)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_rejects_an_image_classifier(tiny_model, class_splits):
    with pytest.raises(NotApplicable, match="TextClassifier"):
        run_method(NAME, tiny_model, class_splits, FAST, device="cpu")
