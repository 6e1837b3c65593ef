"""A verification loads only the retain sample it reports and computes each prediction once:
the same metrics as loading everything and predicting every time."""

from __future__ import annotations

import contextlib

from tests.conftest import FORGET_CLASS
from unlearn_ops import families
from unlearn_ops.families import family
from unlearn_ops.methods import run_method
from unlearn_ops.verify.production import Evaluation, Settings, reported_retain_ids

GATES = {"class": {"forget_accuracy": {"max": 0.02}, "retained_test_accuracy_drop": {"max": 0.02}}}


def test_only_the_reported_retain_sample_is_loaded(digits_store):
    settings = Settings(verify_retain=300, seed=1)
    splits = family("classifier").splits(digits_store, digits_store.class_ids(FORGET_CLASS), settings)
    full = digits_store.splits(digits_store.class_ids(FORGET_CLASS))
    assert splits.retain.ids == full.retain.sample(300, 1).ids               # the sample `prepare` would keep
    assert reported_retain_ids(list(full.retain.ids), Settings(verify_retain=0)) == list(full.retain.ids)
    gan = family("gan").splits(digits_store, digits_store.class_ids(FORGET_CLASS), settings)
    assert len(gan.retain) == len(full.retain)                                # a GAN's FID gates read all of it


def test_same_metrics_as_loading_everything_and_predicting_every_time(tiny_model, digits_store, monkeypatch,
                                                                     tmp_path):
    forget = digits_store.class_ids(FORGET_CLASS)
    fam, settings = family("classifier"), Settings(verify_retain=300)
    candidate = run_method("finetune", tiny_model, digits_store.splits(forget), {"epochs": 1}, device="cpu").model

    def verify(splits, name):
        e = Evaluation(champion=tiny_model, candidate=candidate, splits=splits, store=digits_store,
                       classes=[FORGET_CLASS], item_ids=set(), settings=settings)
        return fam.verify(e, GATES, ["class"], exact=False, report_dir=tmp_path / name).metrics

    lean = verify(fam.splits(digits_store, forget, settings), "lean")
    monkeypatch.setattr(families, "cached_predictions", contextlib.nullcontext)
    assert lean == verify(digits_store.splits(forget), "full")
