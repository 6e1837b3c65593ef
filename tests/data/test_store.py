"""The sample store: stable IDs, subjects, pools, manifest, purge, atomic writes."""

import json
import os

import numpy as np
import pytest

from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import SampleStore, StoreError, assign_subjects, build_store


@pytest.fixture()
def store(tmp_path):
    return build_store(load_digits(), tmp_path / "digits", max_subject_size=10)


def test_same_id_same_bytes_across_builds(store, tmp_path):
    again = build_store(load_digits(), tmp_path / "again", max_subject_size=10)
    assert store.index.sample_id.tolist() == again.index.sample_id.tolist()
    assert store.index.sha256.tolist() == again.index.sha256.tolist()
    assert store.index.subject_id.tolist() == again.index.subject_id.tolist()
    ids = store.active_ids()[:5]
    assert np.array_equal(store.part(ids).x.numpy(), again.part(ids).x.numpy())


def test_ids_are_stable_names(store):
    assert store.index.sample_id.iloc[0] == "digits/train/000000"
    assert store.index.sample_id.is_unique


def test_pools_are_disjoint_and_manifest_is_train_only(store):
    train, nonmember, test = (set(store.pool_ids(p)) for p in ("train", "nonmember", "test"))
    assert not (train & nonmember) and not (train & test) and not (nonmember & test)
    assert set(store.active_ids()) == train
    assert len(nonmember) > 0 and len(test) > 0


def test_splits_reject_overlap(store):
    with pytest.raises(ValueError, match="disjoint"):
        store.splits(store.pool_ids("test")[:3])


def test_subjects_own_between_1_and_max_samples():
    subjects = assign_subjects(1000, seed=3, max_size=40)
    sizes = np.unique(subjects, return_counts=True)[1]
    assert sizes.min() >= 1 and sizes.max() <= 40 and sizes.sum() == 1000
    assert (assign_subjects(1000, seed=3, max_size=40) == subjects).all()


def test_class_names_and_indices(store):
    assert store.class_index("3") == 3 and store.class_index(3) == 3
    with pytest.raises(StoreError, match="out of range"):
        store.class_index(42)


def test_purge_removes_bytes_keeps_hash(store):
    victim = store.active_ids()[:2]
    hashes = store.hashes(victim)
    assert store.purge(victim) == 2
    reopened = SampleStore(store.root)
    assert reopened.index.loc[victim, "purged"].all()
    assert reopened.hashes(victim) == hashes
    positions = reopened.index.index.get_indexer(victim)
    assert not reopened.payload()[positions].any()
    with pytest.raises(StoreError, match="purged"):
        reopened.part(victim)
    assert reopened.purge(victim) == 0


def test_rebuild_reapplies_exclusions(tmp_path):
    raw = load_digits()
    gone = ["digits/train/000001", "digits/train/000002"]
    s = build_store(raw, tmp_path / "d", exclude=gone)
    assert not set(gone) & set(s.active_ids())
    assert s.index.loc[gone, "purged"].all()
    with pytest.raises(StoreError, match="not in digits"):
        build_store(raw, tmp_path / "e", exclude=["digits/train/999999"])


def test_crash_during_manifest_write_keeps_previous_manifest(store, monkeypatch):
    before = store.manifest_path().read_text()

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.write_manifest(store.active_ids()[:3])
    assert store.manifest_path().read_text() == before
    assert len(json.loads(before)["ids"]) == len(store.pool_ids("train"))
    leftovers = [p for p in store.manifest_path().parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
