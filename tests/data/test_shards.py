"""The sharded payload: a subject lives in one shard, a purge rewrites only its shards, and a
pre-shard store (one payload.npy) is read as it is and converted by its first purge."""

import hashlib

import numpy as np
import pytest

from unlearn_ops.data import shards
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import SampleStore, build_store, content_hashes
from unlearn_ops.utils import atomic_save_npy, atomic_write_json


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def store(tmp_path):
    return build_store(load_digits(), tmp_path / "digits", max_subject_size=10, rows_per_shard=200)


def test_pack_keeps_subjects_whole_and_fills_shards():
    subjects = ["b", "a", "", "b", "c", "a", "", "c", "c"]
    layout = shards.pack(subjects, rows_per_shard=4)
    by_subject = {s: {int(layout[i, 0]) for i, x in enumerate(subjects) if x == s} for s in "abc"}
    assert all(len(v) == 1 for v in by_subject.values())
    assert by_subject["a"] == by_subject["b"] != by_subject["c"]  # a (2) + b (2) fill a shard; c (3) starts one
    assert set(layout[[2, 6], 0].tolist()) == {max(by_subject["c"]) + 1}  # subject-less rows come last
    # every (shard, offset) is used once and offsets are dense per shard
    pairs = {tuple(p) for p in layout.tolist()}
    assert len(pairs) == len(subjects)
    for s in set(layout[:, 0].tolist()):
        assert sorted(layout[layout[:, 0] == s, 1].tolist()) == list(range(int((layout[:, 0] == s).sum())))
    assert np.array_equal(shards.pack(subjects, 4), layout)


def test_pack_never_splits_a_subject_larger_than_a_shard():
    layout = shards.pack(["a"] * 5 + ["b"], rows_per_shard=2)
    assert len(set(layout[:5, 0].tolist())) == 1 and layout[5, 0] != layout[0, 0]


def test_store_payload_round_trips_in_index_order(store):
    raw = load_digits()
    expected = np.concatenate([raw.splits["train"][0], raw.splits["test"][0]])
    assert np.array_equal(store.payload(), expected)
    assert content_hashes(store.payload()) == store.index.sha256.tolist()
    assert store.meta["payload_layout"]["shards"] == len(list((store.root / "payload").glob("shard-*.npy")))
    ids = store.active_ids()[::97]
    assert np.array_equal(store.rows(ids), expected[store.index.index.get_indexer(ids)])


def test_forgetting_a_subject_rewrites_one_shard(store):
    before = {p.name: digest(p) for p in (store.root / "payload").glob("*.npy")}
    subject = store.index.subject_id[store.index.subject_id != ""].iloc[0]
    ids = store.subject_ids(subject)
    assert store.purge(ids) == len(ids)
    after = {p.name: digest(p) for p in (store.root / "payload").glob("*.npy")}
    changed = [n for n in before if before[n] != after[n]]
    assert len(changed) == 1 and changed[0].startswith("shard-")
    reopened = SampleStore(store.root)
    assert not reopened.rows(ids).any()
    others = [i for i in reopened.active_ids() if i not in set(ids)][:50]
    assert content_hashes(reopened.rows(others)) == reopened.hashes(others)


def test_pre_shard_store_is_read_then_converted_by_purge(store):
    full = store.payload()
    # the layout every store had before shards: one payload.npy in index order
    meta = {k: v for k, v in store.meta.items() if k != "payload_layout"}
    for p in (store.root / "payload").iterdir():
        p.unlink()
    (store.root / "payload").rmdir()
    atomic_save_npy(store.root / "payload.npy", full)
    atomic_write_json(store.root / "meta.json", meta)
    legacy = SampleStore(store.root)
    ids = legacy.active_ids()[:3]
    assert np.array_equal(legacy.rows(ids), full[:3]) and np.array_equal(legacy.payload(), full)
    assert legacy.purge(ids) == 3
    converted = SampleStore(store.root)
    assert not (store.root / "payload.npy").exists() and converted.meta["payload_layout"]["shards"] >= 1
    expected = full.copy()
    expected[:3] = 0
    assert np.array_equal(converted.payload(), expected)


def test_text_store_purges_to_empty_strings(tmp_path):
    from unlearn_ops.data.sources import RawDataset

    texts = np.array([f"snippet number {i} about a film" for i in range(30)], dtype=np.str_)
    raw = RawDataset("t", ("neg", "pos"), {"train": (texts[:20], np.arange(20) % 2),
                                           "test": (texts[20:], np.arange(10) % 2)})
    s = build_store(raw, tmp_path / "t", max_subject_size=4, rows_per_shard=8)
    victim = s.active_ids()[:2]
    s.purge(victim)
    assert SampleStore(s.root).rows(victim).tolist() == ["", ""]
    assert content_hashes(SampleStore(s.root).payload())[2:] == s.index.sha256.tolist()[2:]
