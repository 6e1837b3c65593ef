"""The generated facts world: deterministic, well-formed, and storable in the sample store."""

import numpy as np
import pytest

from unlearn_ops.data.facts import (
    ATTRIBUTES,
    N_PERTURBED,
    PARAPHRASES,
    FactsWorld,
    build_facts_store,
    load_facts,
    prompt_text,
    qa_text,
    split_qa,
)


def test_same_seed_same_world_other_seed_other_world():
    a, b = FactsWorld(), FactsWorld()
    assert a.items == b.items and a.people == b.people
    assert FactsWorld(seed=1).people != a.people
    raw1, raw2 = load_facts(), load_facts()
    for split in ("train", "test"):
        assert np.array_equal(raw1.splits[split][0], raw2.splits[split][0])


def test_people_items_and_ids():
    w = FactsWorld()
    assert len(w.people) == 24 and len(w.held_out) == 4          # ceil(24 * 0.15) people never trained on
    assert len(w.items) == 24 * len(ATTRIBUTES)
    members = [it for it in w.items if it.sample_id.startswith("facts/train/")]
    assert [it.sample_id for it in members] == [f"facts/train/{i:06d}" for i in range(160)]
    assert {w.subject_of(it.sample_id) for it in members} == {p.subject_id for p in w.members}
    for a in range(len(ATTRIBUTES)):                                # no two people share a fact
        assert len(set(w.pool(a))) == len(w.people)


def test_each_pair_has_paraphrases_perturbations_and_its_fact():
    for it in FactsWorld().items:
        assert len(it.paraphrased_questions) == PARAPHRASES and it.question not in it.paraphrased_questions
        assert len(set(it.perturbed_answers)) == N_PERTURBED
        assert all(f in it.answer and f in it.paraphrased_answer for f in it.facts)
        assert not any(f in p for f in it.facts for p in it.perturbed_answers)
        assert split_qa(it.text) == (prompt_text(it.question), " " + it.answer)


def test_split_qa_rejects_other_text():
    assert split_qa(qa_text("Q?", "A.")) == ("Question: Q?\nAnswer:", " A.")
    with pytest.raises(ValueError, match="not a QA string"):
        split_qa("just a sentence")


def test_store_subjects_are_people_and_held_out_people_are_nonmembers(tmp_path):
    w = FactsWorld()
    store = build_facts_store(tmp_path / "facts", w)
    person = w.members[3]
    ids = store.subject_ids(person.subject_id)
    assert ids == w.subject_ids(person.subject_id) and len(ids) == len(ATTRIBUTES)
    assert sorted(store.pool_ids("nonmember")) == sorted(i for p in w.held_out for i in w.subject_ids(p.subject_id))
    assert store.pool_ids("test") == []
    splits = store.splits(ids)
    assert [str(x) for x in splits.forget.x] == [w.item(i).text for i in ids]
    assert splits.forget.y.tolist() == list(range(len(ATTRIBUTES)))    # label = question type
    assert len(splits.retain) == 160 - len(ATTRIBUTES) and len(splits.nonmember) == 32


def test_rebuilt_store_keeps_forgotten_people_out(tmp_path):
    w = FactsWorld()
    gone = w.subject_ids(w.members[0].subject_id)
    store = build_facts_store(tmp_path / "facts", w, exclude=tuple(gone))
    assert not set(gone) & set(store.active_ids())
    assert store.index.loc[gone, "purged"].all()
