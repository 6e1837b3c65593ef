"""`sharded_retrain` is exact: the retrained members equal training them from scratch on their
retained shard (same seed), weight for weight; the other members are bit-identical."""

from __future__ import annotations

import pytest
import torch

from tests.methods.contract import assert_same_state, check_contract
from tests.sharded_helpers import (
    POOLED,
    SCHEDULE,
    SHARDS,
    SLICES,
    build_sharded,
    one_thread,
    subject_in_slice,
)
from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.models.sharded import POOL


@pytest.fixture(scope="module")
def sharded(digits_store):
    return build_sharded(digits_store)


def from_scratch(store, retain_ids: tuple[str, ...]):
    """The whole sharded build, run again on the retained data only."""
    return build_sharded(store, retain_ids=list(retain_ids))


def forget_subject(store, model, slice_: int):
    subject = subject_in_slice(store, model, slice_)
    splits = store.splits(store.subject_ids(subject))
    with one_thread():
        result = run_method("sharded_retrain", model, splits, SCHEDULE, device="cpu")
    return splits, result


def members_equal(a, b, i: int) -> bool:
    sa, sb = a.members[i].state_dict(), b.members[i].state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("slice_", [0, SLICES - 1])
def test_equals_training_the_member_from_scratch_on_its_retained_shard(digits_store, sharded, slice_):
    splits, result = forget_subject(digits_store, sharded, slice_)
    [hit] = result.details["retrained"]
    assert hit["from_slice"] == slice_ and hit["removed"] == len(splits.forget)
    reference = from_scratch(digits_store, splits.retain.ids)
    for i in range(SHARDS):  # every member: the retrained one and the untouched ones
        assert members_equal(result.model, reference, i), f"member {i} differs from training from scratch"
    assert not members_equal(result.model, sharded, hit["member"])
    assert result.details["untouched"] == [i for i in range(SHARDS) if i != hit["member"]]
    for i in result.details["untouched"]:
        assert members_equal(result.model, sharded, i)
    # the checkpoints are those of the from-scratch build, the map lost exactly the forget set
    new, ref = result.model.state(), reference.state()
    assert new.checkpoints.keys() == ref.checkpoints.keys()
    for key in ref.checkpoints:
        assert_same_state(dict(new.checkpoints[key]), dict(ref.checkpoints[key]))
    assert new.map.ids == ref.map.ids and set(sharded.state().map.ids) - set(new.map.ids) == set(splits.forget.ids)


def test_a_later_slice_costs_less_than_the_first(digits_store, sharded):
    """Resuming from a checkpoint skips the stages before it (SISA's slicing)."""
    _, first = forget_subject(digits_store, sharded, 0)
    _, last = forget_subject(digits_store, sharded, SLICES - 1)
    assert sum(line.count("slice 0:") for line in last.log) == 0
    assert sum(line.count("slice 0:") for line in first.log) > 0


def test_after_an_approximate_method_retrains_from_before_its_dropped_checkpoints(digits_store, sharded):
    """An approximate method on a member drops that member's checkpoints from the first slice that
    held the forgotten data; a later exact retrain of the member starts there and is exact."""
    first = digits_store.subject_ids(subject_in_slice(digits_store, sharded, 0))
    splits = digits_store.splits(first)
    with one_thread():
        tuned = run_method("finetune", sharded, splits, {"epochs": 1, "lr": 1e-3, "batch_size": 64}, device="cpu")
    [member] = tuned.details["members"]
    assert tuned.model.state().valid_slices(member) == 0 and sharded.state().valid_slices(member) == SLICES - 1
    # a second request hits the same member in its last slice: it must be retrained from slice 0
    m = tuned.model.state().map
    later = next(i for i, s, r in zip(m.ids, m.shard.tolist(), m.slice.tolist(), strict=True)
                 if s == member and r == SLICES - 1)
    later_ids = digits_store.subject_ids(digits_store.index.loc[later, "subject_id"])
    retain = [i for i in splits.retain.ids if i not in set(later_ids)]
    with one_thread():
        result = run_method("sharded_retrain", tuned.model, digits_store.splits(later_ids, retain_ids=retain),
                            SCHEDULE, device="cpu")
    assert [r["from_slice"] for r in result.details["retrained"]] == [0]
    assert members_equal(result.model, from_scratch(digits_store, tuple(retain)), member)


def test_a_forget_set_the_model_never_saw_retrains_nothing(digits_store, sharded):
    nonmember = digits_store.part(digits_store.pool_ids("nonmember"))
    splits = Splits(nonmember.subset(range(5)), digits_store.part(list(sharded.state().map.ids)),
                    digits_store.part(digits_store.pool_ids("test")), nonmember.subset(range(5, len(nonmember))), 10)
    result = run_method("sharded_retrain", sharded, splits, SCHEDULE, device="cpu")
    assert result.details["retrained"] == [] and "nothing retrained" in result.details["summary"]
    for i in range(SHARDS):
        assert members_equal(result.model, sharded, i)


def test_a_monolithic_model_is_not_applicable(tiny_model, item_splits):
    with pytest.raises(NotApplicable, match="sharded classifier"):
        run_method("sharded_retrain", tiny_model, item_splits, SCHEDULE, device="cpu")


def test_contract(sharded, item_splits):
    check_contract("sharded_retrain", sharded, item_splits, SCHEDULE)


# --------------------------------------------------------------------- the shared warm-start pool
@pytest.fixture(scope="module")
def pooled(digits_store):
    return build_sharded(digits_store, pooled=True)


def test_members_start_from_a_model_trained_on_the_pool_alone(pooled):
    state = pooled.state()
    assert state.init is not None and state.map.has_pool
    assert not set(state.map.member_ids(POOL)) & {i for m in range(SHARDS) for i in state.map.member_ids(m)}


def test_deleting_a_member_subject_keeps_the_warm_start(digits_store, pooled):
    subject = subject_in_slice(digits_store, pooled, SLICES - 1)
    splits = digits_store.splits(digits_store.subject_ids(subject))
    with one_thread():
        result = run_method("sharded_retrain", pooled, splits, POOLED, device="cpu")
    assert [r["member"] for r in result.details["retrained"]] == [result.details["retrained"][0]["member"]]
    assert result.model.state().init is pooled.state().init
    reference = build_sharded(digits_store, pooled=True, retain_ids=list(splits.retain.ids))
    assert all(members_equal(result.model, reference, i) for i in range(SHARDS))


def test_deleting_a_pool_subject_rebuilds_the_warm_start_and_every_member_exactly(digits_store, pooled):
    subject = subject_in_slice(digits_store, pooled, 0, shard=POOL)
    splits = digits_store.splits(digits_store.subject_ids(subject))
    with one_thread():
        result = run_method("sharded_retrain", pooled, splits, POOLED, device="cpu")
    retrained = result.details["retrained"]
    assert retrained[0]["member"] == POOL and [r["member"] for r in retrained[1:]] == list(range(SHARDS))
    assert all(r["from_slice"] == 0 for r in retrained) and "shared warm start" in result.details["summary"]
    reference = build_sharded(digits_store, pooled=True, retain_ids=list(splits.retain.ids))
    assert all(torch.equal(v, reference.state().init[k]) for k, v in result.model.state().init.items())
    assert all(members_equal(result.model, reference, i) for i in range(SHARDS))


def test_an_approximate_method_on_pool_data_leaves_a_full_rebuild_to_the_exact_method(digits_store, pooled):
    subject = subject_in_slice(digits_store, pooled, 0, shard=POOL)
    splits = digits_store.splits(digits_store.subject_ids(subject))
    tuned = run_method("finetune", pooled, splits, {"epochs": 1, "lr": 1e-3, "batch_size": 64}, device="cpu")
    assert tuned.details["members"] == list(range(SHARDS))  # the pool reached every member
    assert tuned.model.state().init is None and not tuned.model.state().checkpoints
    # the next exact deletion, of anything, retrains the warm start and every member
    other = digits_store.subject_ids(subject_in_slice(digits_store, pooled, SLICES - 1))
    retain = [i for i in splits.retain.ids if i not in set(other)]
    result = run_method("sharded_retrain", tuned.model, digits_store.splits(other, retain_ids=retain), POOLED,
                        device="cpu")
    assert [r["member"] for r in result.details["retrained"]] == [POOL, *range(SHARDS)]
    assert result.model.state().init is not None
