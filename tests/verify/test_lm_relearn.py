"""The LM relearning attack: how it splits a person's facts, and that it leaves the model alone."""

import math

import pytest
import torch

from tests.lm_fixtures import TinyLM, tiny_lm_bundle
from unlearn_ops.verify.lm_relearn import attack_and_probe, lm_relearn, probe_recall


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()


def test_each_person_is_split_in_half_attack_and_probe_disjoint(tiny_lm):
    people = [p.subject_id for p in tiny_lm.world.members[:2]]
    items = [it for it in tiny_lm.world.items if it.subject_id in people and "/train/" in it.sample_id]
    attack, probe = attack_and_probe(items)
    assert {it.sample_id for it in attack}.isdisjoint(it.sample_id for it in probe)
    assert sorted(it.sample_id for it in attack + probe) == sorted(it.sample_id for it in items)
    for p in people:
        own = sum(it.subject_id == p for it in items)
        assert sum(it.subject_id == p for it in attack) == math.ceil(own / 2)
    assert attack_and_probe(list(reversed(items))) == (attack, probe)   # order of the request does not matter


def forget_and_retain(tiny_lm):
    return ([tiny_lm.world.item(i) for i in tiny_lm.splits.forget.ids],
            [tiny_lm.world.item(i) for i in tiny_lm.splits.retain.ids[:8]])


def test_the_attack_leaves_the_callers_model_unchanged_and_reports_each_step(tiny_lm):
    items, retain = forget_and_retain(tiny_lm)
    before = [p.detach().clone() for p in tiny_lm.model.parameters()]
    out = lm_relearn(tiny_lm.model, items, retain, steps=(1, 3), lr=1e-2)
    assert set(out) == {"relearn_recall_0", "relearn_recall_1", "relearn_recall_3"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_lm.model.parameters(), strict=True))
    assert out["relearn_recall_0"] == probe_recall(tiny_lm.model, attack_and_probe(items)[1])


def test_without_a_learning_rate_nothing_comes_back_and_one_pair_a_person_cannot_be_split(tiny_lm):
    items, retain = forget_and_retain(tiny_lm)
    still = lm_relearn(tiny_lm.model, items, retain, steps=(2,), lr=0.0)
    assert still["relearn_recall_2"] == still["relearn_recall_0"]
    assert all(math.isnan(v) for v in lm_relearn(tiny_lm.model, items[:1], retain, steps=(2,)).values())
