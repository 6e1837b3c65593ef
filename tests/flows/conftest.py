"""A complete, tiny deployment in a temp folder: git + DVC repo, params, digits store, a
registered champion in a temp MLflow. Flow tests run the real flow against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.registry import CHAMPION, log_and_register, set_alias
from tests.conftest import TINY_SPEC
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store
from unlearn_ops.models import save_model

MODEL = "digits-classifier"
# These tests check unlearning: class and concept requests go ahead without a person's approval
# (tests/flows/test_approval.py checks the default, where they wait for one).
NO_APPROVAL = {"class": "automatic", "concept": "automatic"}

PARAMS = {
    "models": {MODEL: {"store_dir": "data/store/digits"}},
    "policy": {MODEL: {"class": ["finetune", "retrain"], "samples": ["finetune", "retrain"],
                       "subject": ["finetune", "retrain"]}},
    "unlearn": {"retrain": {"epochs": 15, "lr": 0.003, "batch_size": 64},
                "finetune": {"epochs": 1, "lr": 0.001, "batch_size": 64}},
    "gates": {"class": {"forget_accuracy": {"max": 0.05}, "retained_test_accuracy_drop": {"max": 0.05}},
              "samples": {"mia_loss_auc": {"max": 0.75}, "test_accuracy_drop": {"max": 0.05}},
              "subject": {"mia_loss_auc": {"max": 0.75}, "test_accuracy_drop": {"max": 0.05}}},
    "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *"},
    "approval": NO_APPROVAL,
}


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def make_repo(root: Path, params: dict) -> Path:
    """A git + DVC repository with the deployment's folders and `params`."""
    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")], root)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for d in ("inbox", "processed", "quarantine"):
        (root / "data" / "requests" / d).mkdir(parents=True, exist_ok=True)
    (root / "data" / "forget_sets").mkdir(parents=True, exist_ok=True)
    return root


def make_workspace(root: Path, tiny_model, params: dict | None = None, max_subject_size: int = 10) -> Path:
    root = make_repo(root, params or PARAMS)
    build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=max_subject_size)
    directory = save_model(tiny_model, TINY_SPEC, root / "models" / MODEL)
    version = log_and_register(directory, name=MODEL, family="classifier", experiment="build", run_name="build",
                               tags={"lineage": "build", "method": "train"})
    set_alias(MODEL, CHAMPION, version)
    return root


def version_store(root: Path, store: str = "data/store/digits") -> Path:
    """Version and push the store as the build's import stage leaves it: the pre-deletion store
    is then in the DVC cache and remote (what the batch must collect)."""
    for args in (["add", "-q", store], ["push", "-q"]):
        run([sys.executable, "-m", "dvc", *args], root)
    return root


@pytest.fixture()
def workspace(tmp_path, tiny_model, mlflow_tmp, prefect_harness) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)


GAN_MODEL = "mnist-gan"
TINY_GAN_SPEC = {"z_dim": 8, "g_width": 4, "d_width": 4}
TINY_GAN_REF = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 28, "widths": [4, 8], "hidden": 16}
GAN_SCHEDULE = {"epochs": 0.25, "batch_size": 64, "lr_g": 2e-3, "lr_d": 5e-4}

GAN_PARAMS = {
    "models": {GAN_MODEL: {"store_dir": "data/store/mnist5k", "family": "gan"}},
    "policy": {GAN_MODEL: {kind: ["cascaded_gan", "gan_retrain"] for kind in ("class", "samples", "subject")}},
    "unlearn": {"cascaded_gan": {"epochs": 1, "class_epochs": 0.5, "class_min_epochs": 0},
                "gan_retrain": {**GAN_SCHEDULE, "reference_epochs": 0.25, "reference_lr": 3e-3}},
    # loose quality gates: these tests check the plumbing, the benchmark checks the method
    "gan_gates": {"class": {"forget_class_share": {"max": 1.0}, "fid_change": {"max": 100.0}},
                  "samples": {"d_mia_auc": {"max": 1.0}, "fid_change": {"max": 100.0}},
                  "subject": {"d_mia_auc": {"max": 1.0}, "fid_change": {"max": 100.0}}},
    "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *", "gan_samples": 200},
    "approval": NO_APPROVAL,
}


def make_gan_workspace(root: Path, params: dict | None = None) -> Path:
    """A deployment serving a tiny `mnist-gan` (MNIST-5k store, narrow DCGAN trained for seconds,
    reference classifier attached), registered as champion with the GAN pyfunc."""
    import torch

    from unlearn_ops.data.sources import load_mnist5k
    from unlearn_ops.models import build_model
    from unlearn_ops.models.gan import GAN, GanTrainConfig, init_weights, save_gan, train_gan
    from unlearn_ops.training import TrainConfig, fit

    root = make_repo(root, params or GAN_PARAMS)
    store = build_store(load_mnist5k(), root / "data" / "store" / "mnist5k", max_subject_size=10)
    train = store.splits().retain
    torch.manual_seed(0)
    reference = fit(build_model(TINY_GAN_REF), train, TrainConfig(epochs=0.5, lr=3e-3, batch_size=64, device="cpu"))
    gan = init_weights(GAN(**TINY_GAN_SPEC), 0)
    train_gan(gan.generator, gan.discriminator, train.x, GanTrainConfig(**GAN_SCHEDULE, seed=0, device="cpu"))
    directory = save_gan(gan.attach_reference(reference.cpu(), TINY_GAN_REF), root / "models" / GAN_MODEL)
    version = log_and_register(directory, name=GAN_MODEL, family="gan", experiment="build", run_name="build-gan",
                               tags={"lineage": "build", "method": "train"})
    set_alias(GAN_MODEL, CHAMPION, version)
    return root


LM_MODEL = "tiny-facts"


def lm_params(base_dir: Path, gates: dict | None = None) -> dict:
    from tests.lm_fixtures import TINY_RETRAIN

    item_gates = gates or {"forget_fact_recall_excess": {"max": 1.0}, "retain_rougeL_drop": {"max": 1.0},
                           "perplexity_change": {"max": 100.0}}
    return {
        "models": {LM_MODEL: {"store_dir": "data/store/facts", "family": "lm"}},
        "policy": {LM_MODEL: {kind: ["lm_token_poisoning", "lm_retrain"] for kind in ("samples", "subject")}},
        "unlearn": {"lm_token_poisoning": {"epochs": 3, "ig_steps": 8},
                    "lm_retrain": {**TINY_RETRAIN, "base_dir": str(base_dir)}},
        # loose quality gates unless given: these tests check the plumbing, the benchmark checks the method
        "lm_gates": {"samples": item_gates, "subject": item_gates},
        "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *", "ppl_snippets": 4},
    }


def make_lm_workspace(root: Path, bundle, params: dict) -> Path:
    """A deployment serving the tiny facts Llama of tests/lm_fixtures.py (its world, its weights),
    registered as champion with the LM pyfunc."""
    from unlearn_ops.data.facts import build_facts_store
    from unlearn_ops.models.lm import save_lm

    root = make_repo(root, params)
    build_facts_store(root / "data" / "store" / "facts", bundle.world)
    directory = save_lm(bundle.model, root / "models" / LM_MODEL)
    version = log_and_register(directory, name=LM_MODEL, family="lm", experiment="build", run_name="build-llm",
                               tags={"lineage": "build", "method": "train"})
    set_alias(LM_MODEL, CHAMPION, version)
    return root


TEXT_MODEL = "syn-sentiment"
TEXT_HEAD = {"epochs": 30, "lr": 0.03, "batch_size": 64}


def text_params(gates: dict | None = None) -> dict:
    loose_items = {"mia_loss_auc": {"max": 1.0}, "test_accuracy_drop": {"max": 1.0}}
    return {
        "models": {TEXT_MODEL: {"store_dir": "data/store/syn", "family": "text"}},
        "policy": {TEXT_MODEL: {"class": ["concept_poisoning", "text_retrain"],
                                "concept": ["concept_poisoning", "text_retrain"], "subject": ["text_retrain"]}},
        "unlearn": {"concept_poisoning": {"analysis_per_class": 60, "text_bank_size": 30, "epochs": 5, "lr": 0.03,
                                          "max_poisons": 60},
                    "text_retrain": TEXT_HEAD},
        # loose gates unless given: these tests check the plumbing, the benchmark checks the method
        "text_gates": gates or {"class": {"forget_accuracy": {"max": 1.0}}, "concept": loose_items,
                                "subject": loose_items},
        "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *", "verify_retain": 150},
        "approval": NO_APPROVAL,
    }


def make_text_workspace(root: Path, params: dict) -> Path:
    """A deployment serving a tiny-BERT sentiment classifier on the synthetic movie corpus
    (store with movie groups, head fitted as the build does), registered with the text pyfunc."""
    from tests.text_helpers import raw_corpus
    from unlearn_ops.data.text_store import write_groups
    from unlearn_ops.models import build_model
    from unlearn_ops.models.text import fit_head, tiny_text_spec
    from unlearn_ops.training import TrainConfig

    root = make_repo(root, params)
    raw = raw_corpus()
    store = build_store(raw, root / "data" / "store" / "syn", max_subject_size=10)
    write_groups(store, raw, "movie_name")
    spec = tiny_text_spec()
    model = build_model(spec)
    fit_head(model, store.splits().retain, TrainConfig(**TEXT_HEAD, seed=0, device="cpu"))
    directory = save_model(model, spec, root / "models" / TEXT_MODEL)
    version = log_and_register(directory, name=TEXT_MODEL, family="text", experiment="build", run_name="build-text",
                               tags={"lineage": "build", "method": "train"})
    set_alias(TEXT_MODEL, CHAMPION, version)
    return root


def errors(result: dict) -> list[dict]:
    """The attempts that raised (a bug in a method, not a method that does not apply): none on a normal path."""
    return [a for m in result.get("models") or [] for a in m["attempts"] if a["status"] == "error"]
