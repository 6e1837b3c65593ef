"""The classifier build (`flows.train.fit_model`): params.yaml `train` with shards/slices 1/1 is the
monolithic model as before, bit for bit; with more, a sharded model with its shard map."""

from __future__ import annotations

import torch

from flows.train import fit_model
from tests.conftest import TINY_SPEC
from tests.sharded_helpers import SCHEDULE, one_thread
from unlearn_ops.models import build_model
from unlearn_ops.models.sharded import ShardedEnsemble
from unlearn_ops.training import TrainConfig, fit
from unlearn_ops.utils import seed_everything

TRAIN = {**SCHEDULE, "epochs": 2, "device": "cpu", "shards": 1, "slices": 1, "pool_fraction": 0.0, "pool_epochs": 0}


def test_one_shard_one_slice_is_the_monolithic_build_bit_for_bit(digits_store):
    data = digits_store.splits().retain
    with one_thread():
        seed_everything(0)
        model, spec = fit_model(TRAIN, digits_store, data, dict(TINY_SPEC))
        seed_everything(0)
        before = fit(build_model(dict(TINY_SPEC)), data, TrainConfig(epochs=2, lr=SCHEDULE["lr"],
                                                                     batch_size=SCHEDULE["batch_size"], seed=0,
                                                                     device="cpu"))
    assert spec == TINY_SPEC and not isinstance(model, ShardedEnsemble)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values(),
                                                 strict=True))


def test_shards_and_slices_build_a_sharded_model_of_whole_subjects(digits_store):
    data = digits_store.splits().retain
    model, spec = fit_model({**TRAIN, "shards": 2, "slices": 2, "pool_fraction": 0.2, "pool_epochs": 1},
                            digits_store, data, dict(TINY_SPEC))
    assert isinstance(model, ShardedEnsemble) and spec == model.spec()
    assert spec["member"] == TINY_SPEC and (spec["shards"], spec["slices"]) == (2, 2)
    state = model.state()
    assert state.init is not None and len(state.checkpoints) == 2 and state.map.ids == data.ids
    subjects = digits_store.index.loc[list(data.ids), "subject_id"]
    shard_of = dict(zip(state.map.ids, state.map.shard.tolist(), strict=True))
    assert subjects.groupby(subjects).apply(lambda s: len({shard_of[i] for i in s.index})).eq(1).all()
