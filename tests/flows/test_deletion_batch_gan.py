"""GAN deletion requests through `deletion_batch`: the same flow, policy, gates and registry as a
classifier, with GAN metrics (unlearn_ops.verify.gan) and the GAN pyfunc. Tiny DCGAN on MNIST-5k."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from flows import deletion_batch as db
from tasks.registry import CHAMPION, load_version, version_by_alias
from tasks.workspace import Workspace
from tests.flows.conftest import GAN_MODEL, GAN_PARAMS, TINY_GAN_SPEC, errors, make_gan_workspace
from unlearn_ops.data.store import SampleStore
from unlearn_ops.ledger import Ledger
from unlearn_ops.models.gan import GAN

SUBJECT = {"request_id": "r-gan-subject", "model": GAN_MODEL, "kind": "subject", "subject_id": "subj-00007"}
CLASS = {"request_id": "r-gan-class", "model": GAN_MODEL, "kind": "class", "class_label": 3}


def champion() -> str:
    return str(version_by_alias(GAN_MODEL, CHAMPION).version)


def params_with(**gates: dict) -> dict:
    params = yaml.safe_load(yaml.safe_dump(GAN_PARAMS))
    params["gan_gates"].update(gates)
    return params


def test_subject_request_unlearns_the_gan_and_promotes_it(tmp_path, mlflow_tmp, prefect_harness):
    import mlflow

    root = make_gan_workspace(tmp_path / "ws")
    ws = Workspace.at(root)
    subject_ids = set(ws.store_for(GAN_MODEL).subject_ids("subj-00007"))
    before = champion()

    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "done", result
    report = result["models"][0]
    assert [a["method"] for a in report["attempts"]] == ["cascaded_gan"]
    metrics = report["attempts"][0]["metrics"]["items"]
    assert {"d_mia_auc", "fid_change"} <= set(metrics) and "forget_class_share" not in metrics  # items span classes
    assert metrics["forget_set_size"] == len(subject_ids)
    assert champion() != before
    gan, spec, _ = load_version(GAN_MODEL, CHAMPION)
    assert isinstance(gan, GAN) and spec["arch"] == "dcgan" and gan.reference is not None
    # served through the GAN pyfunc: latent vectors in, images out
    served = mlflow.pyfunc.load_model(f"models:/{GAN_MODEL}@{CHAMPION}")
    images = np.asarray(served.predict(np.random.default_rng(0).standard_normal((4, TINY_GAN_SPEC["z_dim"]))
                                       .astype(np.float32)))
    assert images.shape == (4, 1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    # the subject's images are gone from the active store, and the certificate shows samples, not data
    store = SampleStore(ws.store_for(GAN_MODEL).root)
    assert not subject_ids & set(store.active_ids())
    assert store.index.loc[sorted(subject_ids), "purged"].all()
    cert = json.loads((ws.certificates / f"{result['batch_id']}.json").read_text())
    assert cert["outcome"] == "REGISTERED"
    assert set(cert["models"][0]["reports"]) == {"samples", "samples_before"}


def test_too_small_subject_falls_back_to_exact_gan_retraining(tmp_path, mlflow_tmp, prefect_harness):
    """The power gate rules an approximate method out on a few images (skipped, never run);
    gan_retrain is exempt (exact), and refits the attached reference classifier too (it had seen the
    forgotten images)."""
    power = {"forget_set_size": {"min": 10_000}, "d_mia_auc": {"max": 1.0}, "fid_change": {"max": 100.0}}
    root = make_gan_workspace(tmp_path / "ws", params_with(subject=power))
    before_gan, _, before = load_version(GAN_MODEL, CHAMPION)

    result = db.deletion_batch(requests=[SUBJECT], root=str(root))
    assert not errors(result), errors(result)

    attempts = result["models"][0]["attempts"]
    assert [(a["method"], a["status"]) for a in attempts] == [("cascaded_gan", "skipped"), ("gan_retrain", "passed")]
    assert attempts[0]["reason"].startswith("forget_set_size ") and attempts[0]["reason"].endswith(" < 10000")
    after_gan, _, after = load_version(GAN_MODEL, CHAMPION)
    assert after != before
    changed = [not torch.equal(a, b) for a, b in zip(before_gan.reference.state_dict().values(),
                                                     after_gan.reference.state_dict().values(), strict=True)]
    assert any(changed), "the exact path must refit the reference classifier"


def test_failed_gan_class_deletion_leaves_champion_and_data_untouched(tmp_path, mlflow_tmp, prefect_harness):
    impossible = {"forget_class_share": {"max": -1.0}, "fid_change": {"max": 100.0}}  # a privacy gate no GAN passes
    root = make_gan_workspace(tmp_path / "ws", params_with(**{"class": impossible}))
    ws = Workspace.at(root)
    manifest = ws.store_for(GAN_MODEL).manifest_path().read_text()
    before = champion()

    result = db.deletion_batch(requests=[CLASS], root=str(root))
    assert not errors(result), errors(result)

    assert result["state"] == "failed"
    attempts = result["models"][0]["attempts"]
    assert [a["method"] for a in attempts] == ["cascaded_gan", "gan_retrain"]
    assert all("forget_class_share" in a["metrics"]["class"] for a in attempts)
    assert champion() == before
    assert ws.store_for(GAN_MODEL).manifest_path().read_text() == manifest
    entry = Ledger(ws.ledger_path).find("r-gan-class")[0]
    assert entry.state == "failed" and "forget_class_share" in entry.reason


def test_gan_model_needs_its_gate_section(tmp_path):
    params = yaml.safe_load(yaml.safe_dump(GAN_PARAMS))
    del params["gan_gates"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(KeyError, match="gan_gates"):
        Workspace.at(tmp_path).gates_for(GAN_MODEL)
    params["models"][GAN_MODEL]["family"] = "diffusion"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="family must be one of"):
        Workspace.at(tmp_path).gates_for(GAN_MODEL)
