"""Shadow models and multi-seed runs through Prefect's task runners (threads, and Dask)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from distributed import LocalCluster

from tasks.shadow import run_multi_seed, run_shadow_attack, with_seed
from tests.conftest import TINY_SPEC
from unlearn_ops.methods import METHODS
from unlearn_ops.methods.base import make_config
from unlearn_ops.models import save_model
from unlearn_ops.training import TrainConfig

SHADOW_TRAIN = TrainConfig(epochs=5, lr=3e-3, batch_size=64)


@pytest.fixture(scope="module")
def pool_ids(digits_store):
    ids = digits_store.active_ids()
    return [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:200]]


def test_shadows_run_in_parallel_on_a_dask_cluster(prefect_harness, digits_store, pool_ids, tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        out = run_shadow_attack(digits_store.root, pool_ids, tmp_path, TINY_SPEC, SHADOW_TRAIN, k=4, t=1,
                                dask_address=cluster.scheduler_address)
    assert out["k"] == 4 and out["t"] == 1
    assert all(w != "local" for w in out["workers"]), out["workers"]      # ran on the Dask workers
    assert len(out["workers"]) == 2                                        # ... and on both of them
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [f"shadow-00{i}.npy" for i in range(4)] + ["target-000.npy"]
    m = out["metrics"]
    assert 0.0 <= m["lira_auc"] <= 1.0 and 0.0 <= m["lira_tpr_at_1pct_fpr"] <= 1.0
    # every pool example is attacked in plain LiRA: the confidences are finite everywhere
    assert np.isfinite(np.load(tmp_path / "shadow-000.npy")).all()


def test_multi_seed_runs_locally_one_result_per_seed(prefect_harness, digits_store, tiny_model, tmp_path):
    model_dir = save_model(tiny_model, TINY_SPEC, tmp_path / "base")
    forget = digits_store.class_ids(3)
    rows = run_multi_seed(model_dir, digits_store.root, forget, "finetune",
                          {"epochs": 1, "lr": 1e-3, "batch_size": 64}, seeds=[0, 1], forget_classes=[3])
    assert [r["seed"] for r in rows] == [0.0, 1.0]
    for r in rows:
        assert {"forget_accuracy", "mia_efficacy", "forgetting_rate", "seconds"} <= set(r)
        assert not math.isnan(r["forgetting_rate"])
    assert rows[0]["retain_accuracy"] != rows[1]["retain_accuracy"] or rows[0]["seconds"] != rows[1]["seconds"]


def test_seed_goes_only_to_methods_that_take_one():
    assert with_seed("finetune", {"epochs": 1}, 7) == {"epochs": 1, "seed": 7}
    for name, module in METHODS.items():  # never an unknown key, whatever the method's Config
        make_config(module.Config, with_seed(name, {}, 7))
