"""The long-running parts besides PostgreSQL: the Prefect server, the MLflow tracking server and
the process workers, each a command line with its environment and its health check."""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack.config import CODE_ROOT, HOST, POOL, StackConfig
from stack.proc import env_with, http_ok


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health: str  # what `ps` shows next to it


def bin_of(cfg: StackConfig, tool: str) -> str:
    """The console script installed beside this Python (the venv's `prefect`, `mlflow`)."""
    return str(Path(cfg.python).parent / tool)


def prefect_server(cfg: StackConfig) -> Service:
    env = env_with({
        "PREFECT_HOME": str(cfg.home / "prefect-server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": cfg.database("prefect", "postgresql+asyncpg"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": cfg.prefect_api,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    })
    env.pop("PREFECT_API_URL", None)  # the server is not a client of another server
    return Service("prefect", [bin_of(cfg, "prefect"), "server", "start", "--host", HOST,
                               "--port", str(cfg.prefect_port)], env, cfg.prefect_api + "/health")


def mlflow_server(cfg: StackConfig) -> Service:
    # the store URI goes through the environment, not argv: `ps` would show its password. The
    # driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed.
    env = env_with({"MLFLOW_BACKEND_STORE_URI": cfg.database("mlflow", "postgresql+psycopg2"),
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"})
    return Service("mlflow", [bin_of(cfg, "mlflow"), "server", "--host", HOST, "--port", str(cfg.mlflow_port),
                              "--workers", "1", "--serve-artifacts", "--artifacts-destination", cfg.artifacts],
                   env, cfg.mlflow_url + "/health")


def worker_env(cfg: StackConfig, name: str) -> dict[str, str]:
    """A worker's environment, inherited by the flow runs it starts: the servers, the project the
    flows work on (UNLEARN_PROJECT_DIR), the code (PYTHONPATH) and the heartbeat that lets the
    server tell a dead run from a slow one."""
    env = env_with({
        **cfg.client_env(),
        "PREFECT_HOME": str(cfg.home / name),
        # the runs' temporary files (Prefect's per-run workspace, staged weights) stay in the stack's folder: what a
        # killed run leaves behind is found there, with the rest of the stack's data, not in a machine-wide /tmp
        "TMPDIR": str(worker_tmp(cfg, name)),
        "UNLEARN_PROJECT_DIR": str(cfg.project_dir),
        "PYTHONPATH": str(CODE_ROOT),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(cfg.heartbeat_s),
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # pick up a new run within ~2 s (the default polls every 10 s)
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",  # never install packages at run time
        "PREFECT_LOGGING_LEVEL": "INFO",  # the worker log names each run it takes
    })
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    return env


def worker_name(index: int) -> str:
    return f"{socket.gethostname()}-{index}"


def worker_tmp(cfg: StackConfig, name: str) -> Path:
    """The worker's temporary folder (its TMPDIR), created: Python falls back to /tmp when TMPDIR is missing."""
    folder = cfg.home / name / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def worker(cfg: StackConfig, index: int) -> Service:
    name = f"worker-{index}"
    argv = [bin_of(cfg, "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
            "--name", worker_name(index), "--limit", str(cfg.worker_limit), "--install-policy", "never"]
    return Service(name, argv, worker_env(cfg, name), f"ONLINE in work pool {POOL!r}")


def api(cfg: StackConfig, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
    """One call to the Prefect REST API (what the UI does)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(cfg.prefect_api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def online_workers(cfg: StackConfig) -> set[str]:
    """Names of the pool's workers the server sees ONLINE (their heartbeats arrive)."""
    try:
        rows = api(cfg, "POST", f"/work_pools/{POOL}/workers/filter", {})
    except (OSError, ValueError):
        return set()
    return {w["name"] for w in rows or [] if w.get("status") == "ONLINE"}


def prefect_ok(cfg: StackConfig) -> bool:
    return http_ok(cfg.prefect_api + "/health")


def mlflow_ok(cfg: StackConfig) -> bool:
    return http_ok(cfg.mlflow_url + "/health")
