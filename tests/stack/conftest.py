"""The whole team stack (`python -m stack up`, what `make up` runs) in a temporary folder on free
ports, started once per session and torn down after, with every process it started checked gone.

Flows reach it as a person's Custom run does: a flow run created through the Prefect REST API from
the `deletion_batch/scheduled` deployment, executed by one of two process workers. Each test works
on its own tiny project (digits store + tiny CNN registered on the MLflow *server* under a model name
of its own), given to the run as the worker environment's UNLEARN_PROJECT_DIR (job variables), so
tests do not share requests, ledgers or models.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from stack import proc
from stack.config import CODE_ROOT, StackConfig, free_port
from tests.flows.conftest import PARAMS, make_repo

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ZOMBIE_S = 60  # the shortest the settings allow with Prefect's minimum heartbeat (30 s) is 45; 60 keeps a margin


def stack_env(home: Path, project: Path, ports: dict[str, int]) -> dict[str, str]:
    return {**os.environ, "UNLEARN_STACK_DIR": str(home), "UNLEARN_PROJECT_DIR": str(project),
            "UNLEARN_STACK_PG_PORT": str(ports["pg"]), "UNLEARN_STACK_PREFECT_PORT": str(ports["prefect"]),
            "UNLEARN_STACK_MLFLOW_PORT": str(ports["mlflow"]), "UNLEARN_STACK_WORKERS": "2",
            "UNLEARN_STACK_ZOMBIE_S": str(ZOMBIE_S), "PYTHONPATH": str(CODE_ROOT)}


def run_stack(command: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stack", command], env=env, cwd=CODE_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def project_params(model: str, **batch: Any) -> dict[str, Any]:
    """tests/flows' tiny-project params, serving `model` (each test registers its own)."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    for section in ("models", "policy"):
        params[section] = {model: next(iter(params[section].values()))}
    params["batch"].update(batch)
    return params


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLFLOW_TRACKING_URI = `uri` for this process while the block runs."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
            mlflow.set_tracking_uri(before)


def build_project(root: Path, model: str, tiny_model, mlflow_url: str, params: dict[str, Any]) -> Path:
    """A git + DVC project with the digits store whose champion `model` v1 is on the MLflow server."""
    from tasks.registry import CHAMPION, log_and_register, set_alias
    from tests.conftest import TINY_SPEC
    from unlearn_ops.data.sources import load_digits
    from unlearn_ops.data.store import build_store
    from unlearn_ops.models import save_model

    make_repo(root, params)
    build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    directory = save_model(tiny_model, TINY_SPEC, root / "models" / model)
    with tracking(mlflow_url):
        version = log_and_register(directory, name=model, experiment="build", run_name="build",
                                   tags={"lineage": "build", "method": "train"})
        set_alias(model, CHAMPION, version)
    return root


@dataclass
class Stack:
    cfg: StackConfig
    env: dict[str, str]
    http: httpx.Client

    @property
    def mlflow(self) -> str:
        return self.cfg.mlflow_url

    def deployment(self, name: str = "deletion_batch/scheduled") -> dict[str, Any]:
        return self.http.get(f"/deployments/name/{name}").raise_for_status().json()

    def create_run(self, parameters: dict[str, Any], project: Path | None = None) -> str:
        """What the UI's Custom run posts; `project` becomes the run's UNLEARN_PROJECT_DIR."""
        body: dict[str, Any] = {"parameters": parameters}
        if project is not None:
            body["job_variables"] = {"env": {"UNLEARN_PROJECT_DIR": str(project)}}
        deployment = self.deployment()
        return self.http.post(f"/deployments/{deployment['id']}/create_flow_run", json=body).raise_for_status().json()["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def wait(self, run_id: str, states: set[str] = FINAL, timeout: float = 420) -> dict[str, Any]:
        start = time.monotonic()
        while (run := self.flow_run(run_id))["state_type"] not in states:
            assert time.monotonic() - start < timeout, f"flow run {run_id} still {run['state_type']} after {timeout} s"
            time.sleep(1)
        return run

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        body = {"task_runs": {"flow_run_id": {"any_": [run_id]}}}
        return self.http.post("/task_runs/filter", json=body).raise_for_status().json()

    def wait_task(self, run_id: str, prefix: str, states: set[str], timeout: float = 300) -> dict[str, Any]:
        """The first task run of `run_id` named `prefix`… in one of `states`."""
        start = time.monotonic()
        while True:
            found = [t for t in self.task_runs(run_id) if t["name"].startswith(prefix) and t["state_type"] in states]
            if found:
                return found[0]
            run = self.flow_run(run_id)
            assert run["state_type"] not in FINAL, f"run ended {run['state_type']} before a {prefix} task got {states}"
            assert time.monotonic() - start < timeout, f"no {prefix} task in {states} after {timeout} s"
            time.sleep(0.3)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.cfg.log_dir.glob("worker-*.log")))


def tree_pids(cfg: StackConfig) -> set[int]:
    """Every live process the stack's PID files lead to, with all their descendants."""
    pids = set()
    for name in proc.recorded(cfg.run_dir):
        p = proc.process(cfg.run_dir, name)
        if p is not None:
            pids |= {p.pid, *(c.pid for c in p.children(recursive=True))}
    return pids


@pytest.fixture(scope="session")
def team_project(tmp_path_factory) -> Path:
    """The project the workers serve by default (the UI test's): only its params exist at `up` time."""
    root = tmp_path_factory.mktemp("team-project")
    (root / "params.yaml").write_text(yaml.safe_dump(project_params("digits-team", schedule_active=False)))
    return root


@pytest.fixture(scope="session")
def stack(team_project) -> Iterator[Stack]:
    # not under pytest's private temp folder: as root, PostgreSQL runs as `postgres`, which must enter it
    home = Path(tempfile.mkdtemp(prefix="unlearn-stack-"))
    home.chmod(0o755)
    ports = {"pg": free_port(), "prefect": free_port(), "mlflow": free_port()}
    env = stack_env(home, team_project, ports)
    started = time.perf_counter()
    out = run_stack("up", env)
    assert out.returncode == 0, f"stack up failed:\n{out.stdout}\n{out.stderr}"
    cfg = StackConfig.load(home)
    print(f"\nstack up in {time.perf_counter() - started:.1f} s ({cfg.prefect_ui}, {cfg.mlflow_url})")
    with httpx.Client(base_url=cfg.prefect_api, timeout=30) as http:
        yield Stack(cfg, env, http)
    pids = tree_pids(cfg)
    down = run_stack("down", env)
    assert down.returncode == 0, down.stderr
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"`stack down` left processes running: {alive}"
    assert not proc.recorded(cfg.run_dir) and not cfg.env_file.exists()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def team_workspace(stack, team_project, tiny_model) -> Path:
    return build_project(team_project, "digits-team", tiny_model, stack.mlflow,
                         yaml.safe_load((team_project / "params.yaml").read_text()))
