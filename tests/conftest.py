"""Shared fixtures: a tiny digits store and a tiny trained CNN (seconds on 2 cores).

The environment is pointed at a per-session temp folder before prefect/mlflow are imported,
so tests never touch the project's own registry, Prefect home or the user's home.

Every test runs with the same process state whatever ran before it: torch's intra-op threads
(`--torch-threads`, default 1: a float sum's rounding depends on how it is split across threads)
and the global RNGs seeded to 0. `--reverse-order` runs the collected tests backwards; `make test`
runs the method tests a second time that way with 2 threads, and both runs must pass (a verdict
that flips with order or threads is a coin flip, not a test).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path


def session_dir(prefix: str) -> Path:
    """A temp folder that lasts the test session and is deleted at exit (a session leaves nothing in /tmp)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_TMP = session_dir("unlearn-tests-")
os.environ["PREFECT_HOME"] = str(_TMP / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_TMP / 'mlflow.db'}"
os.environ["UNLEARN_STACK_DIR"] = str(_TMP / "stack")  # a developer's running `make up` stays out of the tests
for _var in ("PREFECT_API_URL", "PREFECT_UI_URL"):  # embedded mode unless a test starts servers itself
    os.environ.pop(_var, None)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["UNLEARN_PROGRESS"] = "off"  # no progress bars, lines or artifacts in test output

import tasks.env  # noqa: E402

tasks.env.configure()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from unlearn_ops.data.sources import load_digits  # noqa: E402
from unlearn_ops.data.store import SampleStore, build_store  # noqa: E402
from unlearn_ops.models import build_model, load_model  # noqa: E402
from unlearn_ops.training import TrainConfig, fit  # noqa: E402

TINY_SPEC = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 8, "widths": [8, 16], "hidden": 32}
TINY_TRAIN = TrainConfig(epochs=15, lr=3e-3, batch_size=64, seed=0, device="cpu")
FORGET_CLASS = 3


# ------------------------------------------------------------------ the state every test starts from
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("determinism")
    group.addoption("--torch-threads", type=int, default=None,
                    help="torch intra-op threads for fixtures and tests (default: $UNLEARN_TEST_THREADS or 1)")
    group.addoption("--reverse-order", action="store_true",
                    help="run the collected tests in reverse order (verdicts must not depend on it)")


def test_threads(config: pytest.Config) -> int:
    threads = config.getoption("--torch-threads") or int(os.environ.get("UNLEARN_TEST_THREADS") or 1)
    if threads < 1:
        raise pytest.UsageError(f"--torch-threads must be >= 1, got {threads}")
    return threads


test_threads.__test__ = False  # a helper, not a test


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(test_threads(config))  # before any session fixture trains a model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse-order"):
        items.reverse()


def pytest_report_header(config: pytest.Config) -> str:
    order = "reversed" if config.getoption("--reverse-order") else "file order"
    return f"torch threads: {test_threads(config)}, test order: {order}, global RNGs seeded 0 per test"


@pytest.fixture(autouse=True)
def _fixed_process_state(request: pytest.FixtureRequest) -> None:
    """Threads and global RNGs as every test expects them, whatever the previous test did."""
    torch.set_num_threads(test_threads(request.config))
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory) -> SampleStore:
    return build_store(load_digits(), tmp_path_factory.mktemp("store") / "digits", max_subject_size=10)


@pytest.fixture(scope="session")
def tiny_spec() -> dict:
    return dict(TINY_SPEC)


TINY_FIXTURE = Path(__file__).parent / "fixtures" / "tiny_digits_cnn"


def fixture_seed() -> int:
    """The seed of the models the fixtures train (0). A margin audit sets UNLEARN_TEST_FIXTURE_SEED
    to train them from another seed: a verdict that flips then rests on one lucky model, and a
    different CPU's rounding can flip it the same way (docs/testing.md)."""
    return int(os.environ.get("UNLEARN_TEST_FIXTURE_SEED") or 0)


def train_tiny_model(store: SampleStore, seed: int = 0) -> torch.nn.Module:
    """TINY_SPEC trained with TINY_TRAIN (and `seed`) on all active digits: the recipe of tiny_model."""
    torch.manual_seed(seed)
    return fit(build_model(TINY_SPEC), store.splits().retain, replace(TINY_TRAIN, seed=seed))


@pytest.fixture(scope="session")
def tiny_model(digits_store) -> torch.nn.Module:
    """A small CNN trained on all active digits (forget set included): the 'original' model.

    Committed weights (tests/fixtures/tiny_digits_cnn, safetensors: `train_tiny_model` on 1 thread),
    so every CPU starts from the same model: 15 epochs of training amplify a CPU's rounding into a
    different model. UNLEARN_TEST_FIXTURE_SEED=N trains it here with seed N instead, to see which
    verdicts depend on the exact model (`python -m tests.fixtures` rewrites the committed one)."""
    seed = os.environ.get("UNLEARN_TEST_FIXTURE_SEED")
    if seed is not None:
        return train_tiny_model(digits_store, int(seed))
    model, spec = load_model(TINY_FIXTURE)
    assert spec == TINY_SPEC, f"{TINY_FIXTURE} holds {spec}, not TINY_SPEC: rerun `python -m tests.fixtures`"
    return model.eval()


@pytest.fixture(scope="session")
def class_splits(digits_store):
    return digits_store.splits(digits_store.class_ids(FORGET_CLASS))


@pytest.fixture(scope="session")
def item_splits(digits_store):
    ids = digits_store.active_ids()
    forget = [ids[i] for i in torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))[:40].tolist()]
    return digits_store.splits(forget)


@pytest.fixture()
def mlflow_tmp(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def prefect_harness():
    """An ephemeral Prefect API for flow tests (starts once per session, ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
