"""The sharded classifier: shard assignment by data subject, the ensemble's forward, and saving
and loading it (members, checkpoints, shard map) through the classifier family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import TINY_SPEC
from tests.sharded_helpers import SHARDS, SLICES, build_sharded, shard_map
from unlearn_ops.families import family
from unlearn_ops.models import build_model, load_any, load_model, save_model
from unlearn_ops.models.sharded import MAP_FILE, POOL, STATE_FILE, ShardedEnsemble, ShardMap
from unlearn_ops.sharding import is_sharded, sharding_of
from unlearn_ops.training import predict_logits


@pytest.fixture(scope="module")
def sharded(digits_store):
    return build_sharded(digits_store)


def test_a_subjects_samples_share_one_shard_and_one_slice(digits_store):
    m = shard_map(digits_store, shards=4, slices=3)
    where = dict(zip(m.ids, zip(m.shard.tolist(), m.slice.tolist(), strict=True), strict=True))
    train = digits_store.index[digits_store.index.pool == "train"]
    per_subject = train.groupby("subject_id").sample_id.apply(lambda ids: {where[i] for i in ids})
    assert per_subject.map(len).eq(1).all()
    assert set(m.shard.tolist()) == set(range(4)) and set(m.slice.tolist()) == set(range(3))


def test_the_assignment_is_stable_and_ignores_the_order_of_the_ids(digits_store):
    ids = digits_store.active_ids()
    a = shard_map(digits_store, ids)
    b = shard_map(digits_store, ids[::-1])
    assert dict(zip(a.ids, a.shard.tolist(), strict=True)) == dict(zip(b.ids, b.shard.tolist(), strict=True))
    # samples without a subject are placed by their own ID
    lone = ShardMap.assign(["x/1", "x/2"], ["", ""], 8, 4)
    assert lone.shard.tolist() == ShardMap.assign(["x/1", "x/2"], ["", ""], 8, 4).shard.tolist()


def test_a_pool_takes_about_its_share_of_the_subjects(digits_store):
    m = ShardMap.assign(digits_store.active_ids(), digits_store.index.loc[digits_store.active_ids(), "subject_id"],
                        3, 2, pool_fraction=0.2)
    share = float((m.shard == POOL).mean())
    assert 0.1 < share < 0.3 and m.has_pool
    with pytest.raises(ValueError, match="pool_fraction"):
        ShardMap.assign(["a"], [""], 2, 1, pool_fraction=1.0)


def test_keep_and_removed(digits_store):
    m = shard_map(digits_store)
    gone = [m.ids[k] for k in np.flatnonzero((m.shard == 1) & (m.slice > 0))[:3]]
    removed = m.removed(set(m.ids) - set(gone))
    assert list(removed) == [1] and removed[1]["removed"] == 3 and removed[1]["first_slice"] >= 1
    kept = m.keep(set(m.ids) - set(gone))
    assert len(kept) == len(m) - 3 and not set(gone) & set(kept.ids)
    back = ShardMap.from_json(json.loads(json.dumps(m.to_json())))
    assert back.ids == m.ids and np.array_equal(back.shard, m.shard) and np.array_equal(back.slice, m.slice)


def test_the_ensemble_returns_the_log_of_the_members_mean_probability(sharded, digits_store):
    x = digits_store.splits().test.x[:50]
    probs = torch.stack([F.softmax(m(x), dim=1) for m in sharded.members]).mean(0)
    assert torch.allclose(sharded(x).exp(), probs, atol=1e-6)
    assert torch.allclose(F.softmax(sharded(x), dim=1), probs, atol=1e-6)  # softmax of it: the same


def test_saved_and_loaded_through_the_classifier_family(sharded, tmp_path):
    fam = family("classifier")
    out = fam.save(sharded, sharded.spec(), tmp_path / "m")
    assert {p.name for p in out.iterdir()} == {"spec.json", "model.safetensors", STATE_FILE, MAP_FILE}
    loaded, spec = fam.load(out)
    assert isinstance(loaded, ShardedEnsemble) and spec == sharded.spec()
    assert (loaded.shards, loaded.slices) == (SHARDS, SLICES)
    for a, b in zip(loaded.state_dict().values(), sharded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s, t = loaded.state(), sharded.state()
    assert s.map.ids == t.map.ids and np.array_equal(s.map.shard, t.map.shard)
    assert s.checkpoints.keys() == t.checkpoints.keys() and len(s.checkpoints) == SHARDS * (SLICES - 1)
    for key in t.checkpoints:
        assert all(torch.equal(s.checkpoints[key][k], v) for k, v in t.checkpoints[key].items())
    # load_any (what the registry's load_version uses) brings the state too
    assert load_any(out)[0].state().map.ids == t.map.ids
    # serving loads the members alone and predicts the same
    served, _ = load_model(out)
    x = torch.rand(4, 1, 8, 8)
    assert served.sharding is None and torch.equal(predict_logits(served, x), predict_logits(sharded, x))


def test_a_sharded_folder_without_its_shard_files_is_a_clear_error(sharded, tmp_path):
    out = save_model(sharded, sharded.spec(), tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="cannot be unlearned exactly"):
        family("classifier").load(out)


def test_a_monolithic_model_is_saved_as_before(tiny_model, tmp_path):
    a = save_model(tiny_model, dict(TINY_SPEC), tmp_path / "a")
    b = family("classifier").save(tiny_model, dict(TINY_SPEC), tmp_path / "b")
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in ("spec.json", "model.safetensors"))


def test_members_cannot_be_sharded_themselves():
    with pytest.raises(ValueError, match="cannot themselves be sharded"):
        build_model({"arch": "sharded", "member": {"arch": "sharded"}, "shards": 2})


def test_the_build_section_decides_whether_a_model_is_sharded():
    assert sharding_of({"epochs": 3}) == (1, 1, 0.0) and not is_sharded({"shards": 1, "slices": 1})
    assert is_sharded({"shards": 4}) and is_sharded({"slices": 2}) and is_sharded({"pool_fraction": 0.1})
