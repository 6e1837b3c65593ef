"""Canaries (issue 4): the production gates in params.yaml must not be fooled.

On a *memorizing* model (train accuracy ≥ 0.99, a clear train–test gap):
* `noop` fails the item (samples / subject) and class gates for every seed tried;
* `retrain` passes them;
* an over-forgetting run (NegGrad+ with the retain term off, run far too long) fails the utility gates;
* `logit_suppression` passes the output-level class gates but is exposed by the relearning attack
  and the feature probe, compared with the retrained model.

Data: why not digits. On scikit-learn's 8×8 digits, even a model trained to 100 % on 200 samples
reaches ≈ 93 % on unseen digits, and forget-vs-non-member attacks cannot tell a no-op from a
retrain on a 40-sample forget set (measured: loss-AUC 0.51–0.61 for noop vs 0.44–0.53 for retrain).
So the canary model is a narrow CNN trained on the first 1 000 Fashion-MNIST training images: it
memorizes them (train 1.0, test ≈ 0.80). Only the first images of the raw files are decompressed
(the raw files come with `make setup`). Pooling to 14×14 was tried to make it cheaper: it then no
longer memorizes (train ≈ 0.88). Gates are exactly params.yaml's.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import fixture_seed
from unlearn_ops.data.sources import FMNIST_FILES, find_fashion_mnist
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods import run_method
from unlearn_ops.models import build_model
from unlearn_ops.training import TrainConfig, accuracy, fit
from unlearn_ops.utils import project_root
from unlearn_ops.verify import check, production_metrics
from unlearn_ops.verify.probe import feature_probe
from unlearn_ops.verify.suite import relearn_metrics

pytestmark = pytest.mark.slow  # six small trainings (≈ 1 min on 2 free cores)

N_TRAIN, N_TEST, N_NONMEMBER = 1000, 1000, 1000
ITEM_FRACTION = 0.1
SEEDS = (0, 1, 2)
CLASSES = (3, 6)  # Dress and Shirt (the class most confused with others)
SPEC = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 28, "widths": [8, 16], "hidden": 64}
SCHEDULE = {"epochs": 30, "lr": 2e-3, "batch_size": 32}
OVERFORGET = {"alpha": 0.0, "epochs": 30, "min_steps": 200, "lr": 1e-2, "max_grad_norm": 0.0}


def _read_prefix(path: Path, header: int, count: int, item: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        f.read(header)
        return np.frombuffer(f.read(count * item), np.uint8)


def _fmnist_prefix(split: str, count: int, offset: int = 0) -> Part:
    """Images offset..offset+count of a raw Fashion-MNIST split, with stable IDs."""
    images, labels, _ = FMNIST_FILES[split]
    folder = find_fashion_mnist(project_root() / "data" / "raw" / "fashion-mnist")
    x = _read_prefix(folder / images, 16, offset + count, 784).reshape(-1, 1, 28, 28)[offset:]
    y = _read_prefix(folder / labels, 8, offset + count, 1)[offset:]
    x = torch.from_numpy(x.astype(np.float32) / 255.0)
    ids = tuple(f"fmnist/{split}/{i:06d}" for i in range(offset, offset + count))
    return Part(ids, x, torch.from_numpy(y.astype(np.int64)))


@pytest.fixture(scope="module")
def data() -> dict[str, Part]:
    return {"train": _fmnist_prefix("train", N_TRAIN), "test": _fmnist_prefix("test", N_TEST),
            "nonmember": _fmnist_prefix("test", N_NONMEMBER, offset=N_TEST)}


@pytest.fixture(scope="module")
def gates() -> dict:
    return yaml.safe_load((project_root() / "params.yaml").read_text())["gates"]


@pytest.fixture(scope="module")
def memorizer(data) -> torch.nn.Module:
    torch.manual_seed(fixture_seed())
    return fit(build_model(SPEC), data["train"], TrainConfig(**SCHEDULE, seed=fixture_seed(), device="cpu"))


def item_splits(data, seed: int) -> Splits:
    n = len(data["train"])
    forget = np.sort(np.random.default_rng(100 + seed).permutation(n)[:int(ITEM_FRACTION * n)])
    retain = np.setdiff1d(np.arange(n), forget)
    return Splits(data["train"].subset(forget), data["train"].subset(retain), data["test"], data["nonmember"], 10)


def class_splits(data, cls: int) -> Splits:
    is_c = (data["train"].y == cls).numpy()
    return Splits(data["train"].where(is_c), data["train"].where(~is_c), data["test"], data["nonmember"], 10)


def item_verdicts(model, original, splits, gates, seed):
    """Verdicts of the `samples` and `subject` gates, with the original as previous champion."""
    ref = production_metrics(original, splits, seed=seed)
    metrics = production_metrics(model, splits, reference_test_accuracy=ref["test_accuracy"], seed=seed)
    return metrics, check(metrics, gates["samples"]), check(metrics, gates["subject"])


def class_verdict(model, original, splits, gates, cls):
    ref = production_metrics(original, splits, forget_classes=[cls])
    metrics = production_metrics(model, splits, forget_classes=[cls], reference_test_accuracy=ref["test_accuracy"],
                                 reference_retained_test_accuracy=ref["retained_test_accuracy"])
    return metrics, check(metrics, gates["class"])


_RETRAINED: dict[tuple, torch.nn.Module] = {}


def retrain(original, splits, seed: int) -> torch.nn.Module:
    """The canary's exact reference (same schedule, from scratch), computed once per forget set."""
    key = (splits.forget.ids, seed)
    if key not in _RETRAINED:
        _RETRAINED[key] = run_method("retrain", original, splits, {**SCHEDULE, "seed": seed}, device="cpu").model
    return _RETRAINED[key]


def test_the_canary_model_memorizes(memorizer, data):
    train, test = accuracy(memorizer, data["train"]), accuracy(memorizer, data["test"])
    assert train >= 0.99
    assert train - test >= 0.10, f"train {train:.3f} vs test {test:.3f}: no memorization, the canaries prove nothing"


@pytest.mark.parametrize("seed", SEEDS)
def test_noop_fails_item_gates(memorizer, data, gates, seed):
    splits = item_splits(data, seed)
    model = run_method("noop", memorizer, splits, device="cpu").model
    metrics, samples, subject = item_verdicts(model, memorizer, splits, gates, seed)
    assert not samples.passed, f"noop passed the samples gates: {metrics}"
    assert not subject.passed, f"noop passed the subject gates: {metrics}"


@pytest.mark.parametrize("seed", SEEDS)
def test_retrain_passes_item_gates(memorizer, data, gates, seed):
    splits = item_splits(data, seed)
    metrics, samples, subject = item_verdicts(retrain(memorizer, splits, seed), memorizer, splits, gates, seed)
    assert samples.passed, samples.summary()
    assert subject.passed, subject.summary()


@pytest.mark.parametrize("cls", CLASSES)
def test_noop_fails_class_gates(memorizer, data, gates, cls):
    splits = class_splits(data, cls)
    metrics, verdict = class_verdict(run_method("noop", memorizer, splits, device="cpu").model, memorizer, splits,
                                     gates, cls)
    assert not verdict.passed and "forget_accuracy" in verdict.failed, metrics


@pytest.mark.parametrize("cls", CLASSES)
def test_retrain_passes_class_gates(memorizer, data, gates, cls):
    splits = class_splits(data, cls)
    metrics, verdict = class_verdict(retrain(memorizer, splits, 0), memorizer, splits, gates, cls)
    assert verdict.passed, verdict.summary()


UTILITY_GATES = {"test_accuracy_drop", "retained_test_accuracy_drop"}


def test_over_forgetting_fails_the_utility_gates(memorizer, data, gates):
    splits = item_splits(data, 0)
    model = run_method("neg_grad_plus", memorizer, splits, OVERFORGET, device="cpu").model
    metrics, samples, _ = item_verdicts(model, memorizer, splits, gates, 0)
    assert UTILITY_GATES & set(samples.failed), f"over-forgetting passed the utility gates: {metrics}"
    splits = class_splits(data, 3)
    model = run_method("neg_grad_plus", memorizer, splits, OVERFORGET, device="cpu").model
    metrics, verdict = class_verdict(model, memorizer, splits, gates, 3)
    assert UTILITY_GATES & set(verdict.failed), f"over-forgetting passed the utility gates: {metrics}"


def test_logit_suppression_fools_the_output_gates_but_not_relearn_and_probe(memorizer, data, gates):
    cls = 3
    splits = class_splits(data, cls)
    # With the plain zeroing (bias 0) this model still predicts the class for ≈ 4 % of its samples
    # (all its other logits can be negative), which the class gates already catch. A bias of −5
    # is just enough to pass them, i.e. the strongest version of the canary.
    suppressed = run_method("logit_suppression", memorizer, splits, {"bias": -5.0}, device="cpu").model
    metrics, verdict = class_verdict(suppressed, memorizer, splits, gates, cls)
    assert verdict.passed, f"logit suppression should pass every output-level class gate: {verdict.summary()}"

    exact = retrain(memorizer, splits, 0)
    steps = (1, 3, 10)
    rl_sup = relearn_metrics(suppressed, splits, [cls], steps)
    rl_ref = relearn_metrics(exact, splits, [cls], steps)
    probe_sup = feature_probe(suppressed, splits.test, [cls])
    probe_ref = feature_probe(exact, splits.test, [cls])
    # measured: the class is back to ≈ 0.93 after 10 steps vs ≈ 0.08 for the retrained model;
    # the probe separates the class almost as well in the retrained model's features (≈ 0.9 both)
    relearn_flag = rl_sup["relearn_acc_10"] - rl_ref["relearn_acc_10"] >= 0.3
    probe_flag = probe_sup - probe_ref >= 0.05
    assert relearn_flag or probe_flag, (rl_sup, rl_ref, probe_sup, probe_ref)
