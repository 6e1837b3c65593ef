"""What `make up` starts and where: ports, folders and names, from environment variables with defaults.

Every part listens on loopback only. `up` records the configuration it used in `stack.json`, so
`down` and `ps` act on what was started even if the variables have changed since.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.env import project_root, stack_dir

HOST = "127.0.0.1"
POOL = "unlearn"  # the process work pool every worker polls
QUEUES = ("default", "gpu")  # `gpu`: runs that train or unlearn (a GPU machine's worker polls it)
CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout whose flows the workers run

# variable → (default, what it sets); README and docs/deployment.md list the same
SETTINGS = {
    "UNLEARN_STACK_DIR": ("var/stack", "state: PostgreSQL cluster, artifacts, logs, PID files, env"),
    "UNLEARN_STACK_PG_PORT": ("54329", "port of the project's own PostgreSQL cluster"),
    "UNLEARN_STACK_PREFECT_PORT": ("4200", "Prefect server (API + UI)"),
    "UNLEARN_STACK_MLFLOW_PORT": ("5000", "MLflow tracking server (API + UI + artifacts)"),
    "UNLEARN_STACK_DATABASE_URL": ("", "an existing PostgreSQL server (postgresql://user:password@host:port) "
                                       "instead of the project's own cluster"),
    "UNLEARN_STACK_ARTIFACTS": ("<stack dir>/mlartifacts", "where the MLflow server keeps artifacts (e.g. s3://bucket)"),
    "UNLEARN_STACK_WORKERS": ("1", "process workers started on this machine"),
    "UNLEARN_STACK_WORKER_LIMIT": ("1", "flow runs one worker runs at a time"),
    "UNLEARN_STACK_GPU_SLOTS": ("1", "concurrency limit of the `gpu` task tag (GPUs in the whole fleet)"),
    "UNLEARN_STACK_HEARTBEAT_S": ("30", "flow-run heartbeat period (Prefect's minimum is 30)"),
    "UNLEARN_STACK_ZOMBIE_S": ("90", "a running flow run without a heartbeat for this long is marked Crashed"),
}


class StackError(RuntimeError):
    """A setting or a part of the stack is wrong: the message names it and says what to do."""


def _int(name: str, default: int, low: int = 1, high: int = 65535) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise StackError(f"{name} must be between {low} and {high}, not {value}")
    return value


@dataclass(frozen=True)
class StackConfig:
    home: Path
    project_dir: Path
    pg_port: int = 54329
    prefect_port: int = 4200
    mlflow_port: int = 5000
    database_url: str = ""  # empty: the project's own cluster under home/pg
    artifacts: str = ""
    workers: int = 1
    worker_limit: int = 1
    gpu_slots: int = 1
    heartbeat_s: int = 30
    zombie_s: int = 90
    python: str = field(default=sys.executable)

    @classmethod
    def from_env(cls) -> StackConfig:
        home = stack_dir().resolve()
        heartbeat = _int("UNLEARN_STACK_HEARTBEAT_S", 30, 30, 3600)
        return cls(home=home, project_dir=project_root().resolve(),
                   pg_port=_int("UNLEARN_STACK_PG_PORT", 54329), prefect_port=_int("UNLEARN_STACK_PREFECT_PORT", 4200),
                   mlflow_port=_int("UNLEARN_STACK_MLFLOW_PORT", 5000),
                   database_url=os.environ.get("UNLEARN_STACK_DATABASE_URL", "").rstrip("/"),
                   artifacts=os.environ.get("UNLEARN_STACK_ARTIFACTS") or str(home / "mlartifacts"),
                   workers=_int("UNLEARN_STACK_WORKERS", 1, 0, 64),
                   worker_limit=_int("UNLEARN_STACK_WORKER_LIMIT", 1, 1, 64),
                   gpu_slots=_int("UNLEARN_STACK_GPU_SLOTS", 1, 1, 1024), heartbeat_s=heartbeat,
                   zombie_s=_int("UNLEARN_STACK_ZOMBIE_S", 90, heartbeat + 15, 86400))

    @classmethod
    def load(cls, home: Path) -> StackConfig | None:
        """The configuration `up` recorded in `home`, or None when it never ran there."""
        path = home / "stack.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "home": Path(data["home"]), "project_dir": Path(data["project_dir"])})

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        write_private(self.home / "stack.json", json.dumps(asdict(self), default=str, indent=2))

    # ---------------------------------------------------------------- derived
    own_postgres = property(lambda self: not self.database_url)
    pg_dir = property(lambda self: self.home / "pg")
    run_dir = property(lambda self: self.home / "run")
    log_dir = property(lambda self: self.home / "logs")
    env_file = property(lambda self: self.home / "env")
    prefect_ui = property(lambda self: f"http://{HOST}:{self.prefect_port}")
    prefect_api = property(lambda self: f"http://{HOST}:{self.prefect_port}/api")
    mlflow_url = property(lambda self: f"http://{HOST}:{self.mlflow_port}")

    def server_url(self) -> str:
        """postgresql://user:password@host:port of the database server (own cluster or given)."""
        if self.database_url:
            return self.database_url
        password = (self.pg_dir / "password").read_text().strip()
        return f"postgresql://postgres:{password}@{HOST}:{self.pg_port}"

    def database(self, name: str, driver: str = "postgresql") -> str:
        return self.server_url().replace("postgresql://", f"{driver}://", 1) + f"/{name}"

    def client_env(self) -> dict[str, str]:
        """What `unlearn` commands and flows need to use these servers (written to `env`)."""
        return {"PREFECT_API_URL": self.prefect_api, "PREFECT_UI_URL": self.prefect_ui,
                "MLFLOW_TRACKING_URI": self.mlflow_url}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold the database password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (tests start a whole stack on such ports)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
