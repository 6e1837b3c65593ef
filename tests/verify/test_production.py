"""Production verification: a mixed forget set is judged part by part, each kind by its own gates."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import FORGET_CLASS
from unlearn_ops.families import family
from unlearn_ops.verify.production import Evaluation, Settings, judge, kind_splits

GATES = {"class": {"forget_accuracy": {"max": 0.05}},
         "subject": {"forget_set_size": {"min": 100}, "mia_loss_auc": {"max": 0.75}}}


@pytest.fixture(scope="module")
def mixed(digits_store):
    """Class 3 and one subject's samples of other classes, forgotten together."""
    subjects = sorted(s for s in digits_store.index.subject_id.unique() if s)
    subject = next(s for s in subjects
                   if FORGET_CLASS not in set(digits_store.index.loc[digits_store.subject_ids(s), "label"]))
    items = digits_store.subject_ids(subject)
    return digits_store.splits(digits_store.class_ids(FORGET_CLASS) + items), set(items)


def test_kind_splits_separate_the_class_from_the_items(mixed):
    splits, items = mixed
    parts = kind_splits(splits, [FORGET_CLASS], items)
    assert set(parts["class"].forget.y.numpy()) == {FORGET_CLASS}
    assert set(parts["items"].forget.ids) == items
    assert FORGET_CLASS not in set(parts["items"].test.y.numpy())  # judged on the classes that remain
    assert len(parts["class"].forget) + len(parts["items"].forget) == len(splits.forget)


def test_judge_reads_each_kind_from_its_group_and_spares_exact_methods_the_power_gates():
    metrics = {"class": {"forget_accuracy": 0.0}, "items": {"forget_set_size": 12.0, "mia_loss_auc": 0.5}}
    approximate = judge(metrics, GATES, ["class", "subject"], exact=False)
    assert approximate["class"]["passed"] and approximate["subject"]["failed"] == ["forget_set_size"]
    assert judge(metrics, GATES, ["subject"], exact=True)["subject"]["passed"]
    with pytest.raises(KeyError, match="'samples'"):
        judge(metrics, GATES, ["samples"], exact=False)


def test_the_classifier_family_verifies_on_a_retain_sample_and_draws_its_report(tiny_model, digits_store, mixed,
                                                                              tmp_path):
    splits, items = mixed
    e = Evaluation(tiny_model, tiny_model, splits, digits_store, [FORGET_CLASS], items, Settings(verify_retain=300))
    v = family("classifier").verify(e, GATES, ["class", "subject"], exact=False, report_dir=tmp_path)
    assert not v.passed and v.gates["class"]["failed"] == ["forget_accuracy"]  # the champion itself remembers
    assert v.metrics["class"]["retain_evaluated"] == v.metrics["items"]["retain_evaluated"] == 300
    assert np.isclose(v.metrics["class"]["retained_test_accuracy_drop"], 0.0)  # candidate = champion
    assert set(v.reports) == {"roc", "loss_hist", "per_class"} and all(p.is_file() for p in v.reports.values())
