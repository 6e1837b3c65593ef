"""Entity groups (Rotten Tomatoes movie names) beside a text store: the `concept` request's resolver."""

import pytest

from unlearn_ops.data.sources import load_rotten_tomatoes
from unlearn_ops.data.store import StoreError, build_store
from unlearn_ops.data.text_store import group_ids, groups, write_groups
from unlearn_ops.requests import DeletionRequest, RequestError, resolve


@pytest.fixture(scope="module")
def rt():
    raw = load_rotten_tomatoes()
    return raw


def test_movie_groups_resolve_to_the_right_snippets(rt, tmp_path):
    store = build_store(rt, tmp_path / "rt")
    with pytest.raises(StoreError, match="write_groups"):
        group_ids(store, "enigma")
    write_groups(store, rt, "movie_name")
    ids = group_ids(store, "enigma")
    movie = rt.extra["train"]["movie_name"]
    expected = [f"rt/train/{i:06d}" for i in range(len(movie)) if movie[i] == "enigma"]
    assert ids == expected and len(ids) > 10
    # the snippets behind the IDs are the loader's snippets of that movie, in order
    part = store.part(ids)
    x, _ = rt.splits["train"]
    assert list(part.x) == [x[int(i.rsplit("/", 1)[1])] for i in ids]
    # test-pool snippets of the movie are found with pool=..., and never mixed into train
    assert all(i.startswith("rt/test/") for i in group_ids(store, "enigma", pool="test"))
    assert len(groups(store)) == len(rt.splits["train"][1]) + len(rt.splits["test"][1])
    # purging keeps the group (metadata), so the same request resolves to the same IDs
    store.purge(ids[:3])
    assert group_ids(store, "enigma") == expected


def test_groups_need_the_column_and_the_matching_store(rt, tmp_path):
    store = build_store(rt, tmp_path / "rt")
    with pytest.raises(StoreError, match="no 'director'"):
        write_groups(store, rt, "director")


def test_a_concept_request_resolves_to_the_movies_active_snippets(rt, tmp_path):
    store = build_store(rt, tmp_path / "rt")
    request = DeletionRequest(model="rt-sentiment", kind="concept", concept="enigma")
    with pytest.raises(RequestError, match="no entities to forget by concept"):
        resolve(request, store)
    write_groups(store, rt, "movie_name")
    ids = group_ids(store, "enigma")
    store.purge(ids[:2])
    store.write_manifest([i for i in store.active_ids() if i not in ids[:2]])
    assert resolve(request, store) == ids[2:]
    with pytest.raises(RequestError, match="unknown concept 'no such movie'"):
        resolve(DeletionRequest(model="rt-sentiment", kind="concept", concept="no such movie"), store)
    store.purge(ids)
    store.write_manifest([i for i in store.active_ids() if i not in ids])
    with pytest.raises(RequestError, match="already forgotten"):
        resolve(request, store)
