"""No attempt that cannot pass (issue 21, items 4-6): a method the batch alone rules out is skipped
without running; an approximate method is only run where the gates reject the champion itself by
their power margin on this forget set; a no-op first in the chain is never promoted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from flows import deletion_batch as db
from flows.params import load_params
from tasks.registry import CHAMPION, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import GAN_MODEL, GAN_PARAMS, MODEL, PARAMS, errors, make_gan_workspace, make_workspace
from unlearn_ops.ledger import Ledger

PRODUCTION = load_params()


def params_with(chain: list[str], kind: str, gates: dict) -> dict:
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    params["policy"][MODEL][kind] = chain
    params["gates"][kind] = gates
    return params


def request(rid: str, **target) -> dict:
    kind = "subject" if "subject_id" in target else "samples"
    return {"request_id": rid, "model": MODEL, "kind": kind, **target}


def attempts_of(result: dict) -> list[dict]:
    return result["models"][0]["attempts"]


def certificate_md(root, result: dict) -> str:
    return (Workspace.at(root).certificates / f"{result['batch_id']}.md").read_text()


def champion_method(model: str = MODEL) -> str:
    from mlflow import MlflowClient

    version = version_by_alias(model, CHAMPION).version
    return MlflowClient().get_model_version(model, str(version)).tags.get("method", "")


def test_a_method_the_batch_rules_out_is_skipped_and_a_batch_large_enough_runs_it(tmp_path, tiny_model, mlflow_tmp,
                                                                                  prefect_harness):
    """An 18-sample subject under `forget_set_size >= 100`: finetune could never pass, so it is not
    run (no time spent, no model made); the exact method runs. A batch of >= 100 samples runs it."""
    gates = {"forget_set_size": {"min": 100}, **PARAMS["gates"]["subject"]}
    root = make_workspace(tmp_path / "ws", tiny_model, params_with(["finetune", "retrain"], "subject", gates),
                          max_subject_size=40)
    ws = Workspace.at(root)
    index = ws.store_for(MODEL).index
    sizes = index[index.subject_id != ""].groupby("subject_id").size()
    small = next(s for s, n in sizes.items() if n == 18)

    result = db.deletion_batch(requests=[request("r-18", subject_id=small)], root=str(root))
    assert not errors(result), errors(result)
    attempts = attempts_of(result)
    assert [(a["method"], a["status"]) for a in attempts] == [("finetune", "skipped"), ("retrain", "passed")]
    assert attempts[0]["reason"] == "forget_set_size 18 < 100" and attempts[0]["seconds"] == 0
    assert not list((ws.runs / result["batch_id"] / MODEL).glob("attempt-0-*")), "a skipped method never runs"
    stored = Ledger(ws.ledger_path).batch(result["batch_id"])["progress"][f"{MODEL}:attempts"]
    assert stored[0]["status"] == "skipped" and stored[0]["reason"] == "forget_set_size 18 < 100"
    md = certificate_md(root, result)
    assert "finetune (skipped) → retrain ✓" in md and "skipped: forget_set_size 18 < 100" in md
    assert "### Attempt `finetune` — SKIPPED" in md

    # the gate value that flips it: subjects adding up to >= 100 samples, and finetune runs
    big, total = [], 0
    for subject, n in sizes.items():
        if subject != small and total < 100:
            big.append(subject)
            total += n
    result = db.deletion_batch(requests=[request(f"r-big-{i}", subject_id=s) for i, s in enumerate(big)],
                               root=str(root))
    assert not errors(result), errors(result)
    first = attempts_of(result)[0]
    assert first["method"] == "finetune" and first["status"] in ("passed", "failed") and first["seconds"] > 0
    assert first["metrics"]["items"]["forget_set_size"] == total >= 100


def test_a_noop_first_in_the_chain_is_never_promoted_at_any_size(tmp_path, tiny_model, mlflow_tmp, prefect_harness):
    """params.yaml's item gates (power margin included) on the tiny digits model, which barely
    memorizes (its own forget_accuracy_z stays <= 2.2 from 20 to 1 400 samples, far below 3 + 2):
    the no-op is skipped below 100 samples and has no power above; without the power check it
    would pass these gates (tests/verify/test_power.py shows that on the same model)."""
    root = make_workspace(tmp_path / "ws", tiny_model,
                          params_with(["noop", "retrain"], "samples", PRODUCTION["gates"]["samples"]))
    ws = Workspace.at(root)
    ids = ws.store_for(MODEL).active_ids()
    order = np.random.default_rng(0).permutation(len(ids))
    start = 0
    for size, expected in ((20, "skipped"), (150, "no_power"), (600, "no_power")):
        chosen = [ids[i] for i in order[start:start + size]]
        start += size
        result = db.deletion_batch(requests=[request(f"r-{size}", sample_ids=chosen)], root=str(root))
        assert not errors(result), errors(result)
        noop = attempts_of(result)[0]
        assert noop["method"] == "noop" and noop["status"] == expected, noop
        assert champion_method() != "noop"
        report = result["models"][0]
        if expected == "no_power":
            power = report["power"]
            assert not power["has_power"] and power["metrics"]["items"]["forget_accuracy_z"] < 5.0
            assert noop["reason"] == power["sentence"] and "only an exact method can certify" in noop["reason"]
            assert "forget_accuracy_z" in power["sentence"] and "(= 3 + margin 2)" in power["sentence"]
            md = certificate_md(root, result)
            assert "noop (no power) → retrain" in md and "### Attempt `noop` — NO POWER" in md
            assert "Power check: these gates do not reject the champion itself" in md
        else:
            assert noop["reason"] == "forget_set_size 20 < 100" and report["power"] is None  # not needed


def test_the_power_check_runs_once_per_batch_and_a_resumed_run_reuses_it(tmp_path, tiny_model, mlflow_tmp,
                                                                        prefect_harness, monkeypatch):
    root = make_workspace(tmp_path / "ws", tiny_model,
                          params_with(["noop", "finetune", "retrain"], "samples", PRODUCTION["gates"]["samples"]))
    ws = Workspace.at(root)
    chosen = ws.store_for(MODEL).active_ids()[:150]
    real_unlearn, real_power, calls = db.unlearn_task, db.power_task, []

    def crash_on_retrain(*args, **kwargs):
        if args[4] == "retrain":
            raise RuntimeError("injected crash before retrain")
        return real_unlearn(*args, **kwargs)

    def counted(*args, **kwargs):
        calls.append(1)
        return real_power(*args, **kwargs)

    monkeypatch.setattr(db, "unlearn_task", crash_on_retrain)
    monkeypatch.setattr(db, "power_task", counted)
    with pytest.raises(RuntimeError, match="injected crash"):
        db.deletion_batch(requests=[request("r-150", sample_ids=chosen)], root=str(root))
    assert calls == [1]  # one champion verification for both approximate methods
    monkeypatch.setattr(db, "unlearn_task", real_unlearn)
    result = db.deletion_batch(root=str(root))
    assert calls == [1]  # the resumed run reads it from the batch progress
    attempts = attempts_of(result)
    assert [(a["method"], a["status"]) for a in attempts[:2]] == [("noop", "no_power"), ("finetune", "no_power")]
    assert attempts[2]["method"] == "retrain" and attempts[2]["status"] in ("passed", "failed")
    assert result["models"][0]["power"]["seconds"] > 0


# ------------------------------------------------------------------ a memorizing champion
N_TRAIN, N_TEST = 1000, 2000
MEMORIZER = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 28, "widths": [8, 16], "hidden": 64}
FMNIST_MODEL = "fmnist-memorizer"


def make_memorizer_workspace(root, params: dict):
    """The canaries' memorizing model (tests/verify/test_canaries.py) as a deployment: the first
    1 000 Fashion-MNIST training images (read by the real import code) memorized by a narrow CNN
    (train 1.0, unseen ≈ 0.80), registered as champion."""
    import torch

    from tasks.registry import log_and_register, set_alias
    from tests.flows.conftest import make_repo
    from unlearn_ops.data.sources import RawDataset, load_fashion_mnist
    from unlearn_ops.data.store import build_store
    from unlearn_ops.models import build_model, save_model
    from unlearn_ops.training import TrainConfig, fit
    from unlearn_ops.utils import project_root

    root = make_repo(root, params)
    raw = load_fashion_mnist(project_root() / "data" / "raw" / "fashion-mnist")
    small = RawDataset(raw.name, raw.classes, {"train": tuple(a[:N_TRAIN] for a in raw.splits["train"]),
                                               "test": tuple(a[:N_TEST] for a in raw.splits["test"])})
    store = build_store(small, root / "data" / "store" / "fmnist")
    torch.manual_seed(0)
    model = fit(build_model(MEMORIZER), store.splits().retain,
                TrainConfig(epochs=30, lr=2e-3, batch_size=32, seed=0, device="cpu"))
    directory = save_model(model, MEMORIZER, root / "models" / FMNIST_MODEL)
    version = log_and_register(directory, name=FMNIST_MODEL, family="classifier", experiment="build",
                               run_name="build", tags={"lineage": "build", "method": "train"})
    set_alias(FMNIST_MODEL, CHAMPION, version)
    return root


@pytest.mark.slow  # a 30-epoch training on 1 000 images, then a deletion batch (≈ 1 min on 2 cores)
def test_on_a_memorizing_champion_the_gates_have_power_and_a_real_method_is_allowed(tmp_path, mlflow_tmp,
                                                                                    prefect_harness):
    """The champion remembers its training images (its own forget_accuracy_z ≈ 8 on 200 of them,
    far above 3 + 2): the gates have power, the no-op runs and fails them, and params.yaml's first
    item method (random_label with its chain entry's settings) is run and judged."""
    first = PRODUCTION["policy"]["fmnist-classifier"]["samples"][0]
    params = {
        "models": {FMNIST_MODEL: {"store_dir": "data/store/fmnist"}},
        "policy": {FMNIST_MODEL: {"samples": ["noop", first, "retrain"]}},
        "unlearn": {"retrain": {"epochs": 30, "lr": 2e-3, "batch_size": 32}},
        "gates": {"samples": PRODUCTION["gates"]["samples"]},
        "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *", "verify_retain": 500},
    }
    root = make_memorizer_workspace(tmp_path / "ws", params)
    ids = Workspace.at(root).store_for(FMNIST_MODEL).active_ids()
    chosen = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:200]]

    result = db.deletion_batch(requests=[{"request_id": "r-200", "model": FMNIST_MODEL, "kind": "samples",
                                          "sample_ids": chosen}], root=str(root))
    assert not errors(result), errors(result)
    report = result["models"][0]
    power = report["power"]
    assert power["has_power"] and power["metrics"]["items"]["forget_accuracy_z"] >= 6.0, power
    noop, rl = report["attempts"][:2]
    assert noop["method"] == "noop" and noop["status"] == "failed"
    assert "forget_accuracy_z" in noop["gates"]["samples"]["failed"]
    # the no-op is the champion: the power check measured exactly what the gates then saw
    assert noop["metrics"]["items"]["forget_accuracy_z"] == power["metrics"]["items"]["forget_accuracy_z"]
    assert rl["method"] == "random_label" and rl["status"] in ("passed", "failed") and rl["seconds"] > 0
    assert {k: rl["settings"][k] for k in first["with"]} == first["with"]  # the entry's own settings ran
    assert champion_method(FMNIST_MODEL) != "noop"
    md = certificate_md(root, result)
    assert "Power check: these gates reject the champion itself" in md and "`relabel: match`" in md


# ------------------------------------------------------------------------------------- GANs
def test_gan_item_requests_go_to_gan_retrain_with_the_reason_in_the_certificate(tmp_path, mlflow_tmp,
                                                                                 prefect_harness):
    """params.yaml's GAN item gates: the GAN before unlearning passes the D-MIA gate (it does not
    memorise single images: AUC ≈ 0.5, measured 0.505-0.546 on the real build), so the power check
    finds no power and cascaded_gan is never run; gan_retrain is. (FID gate loosened: a tiny GAN's
    retrain is not the point here.)"""
    items = {**PRODUCTION["gan_gates"]["samples"], "fid_change": {"max": 100.0}}
    assert items["d_mia_auc"].get("power_margin"), "params.yaml's GAN item gates carry a power margin"
    params = yaml.safe_load(yaml.safe_dump(GAN_PARAMS))
    params["gan_gates"]["samples"] = items
    root = make_gan_workspace(tmp_path / "ws", params)
    ids = Workspace.at(root).store_for(GAN_MODEL).active_ids()
    chosen = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:150]]

    result = db.deletion_batch(requests=[{"request_id": "r-gan-150", "model": GAN_MODEL, "kind": "samples",
                                          "sample_ids": chosen}], root=str(root))
    assert not errors(result), errors(result)
    report = result["models"][0]
    attempts = report["attempts"]
    assert [a["method"] for a in attempts] == ["cascaded_gan", "gan_retrain"]
    assert attempts[0]["status"] == "no_power" and attempts[0]["seconds"] == 0
    assert attempts[1]["status"] in ("passed", "failed") and attempts[1]["seconds"] > 0
    assert not report["power"]["has_power"] and report["power"]["metrics"]["items"]["d_mia_auc"] < 0.72
    assert "d_mia_auc" in attempts[0]["reason"] and "(= 0.62 + margin 0.1)" in attempts[0]["reason"]
    cert = json.loads((Workspace.at(root).certificates / f"{result['batch_id']}.json").read_text())
    assert cert["models"][0]["power"]["sentence"] == attempts[0]["reason"]
    assert "only an exact method can certify this batch" in certificate_md(root, result)
