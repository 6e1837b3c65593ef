"""`make up` / `make down` / `make ps` / `make deploy`: start, stop, show and (re)deploy the team stack.

    PostgreSQL (own cluster, or UNLEARN_STACK_DATABASE_URL) → databases `prefect` and `mlflow`
    → Prefect server and MLflow server (in parallel) → work pool, limits, deployments
    → N process workers → var/stack/env (what `unlearn` and the flows read)

`up` returns only when every part passes its health check, and starts only what is not running
(a second `up` changes nothing). `down` stops what `up` started, by PID file, and keeps the data.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from stack import postgres, proc
from stack.config import CODE_ROOT, StackConfig, StackError, port_is_free, write_private
from stack.services import (
    Service,
    mlflow_ok,
    mlflow_server,
    online_workers,
    prefect_ok,
    prefect_server,
    worker,
    worker_name,
)

START_TIMEOUT_S = 180  # a first start migrates both databases; on 2 busy cores that takes a while


@dataclass
class Part:
    name: str
    state: str  # running | stopped | stale (PID file of a dead process) | external
    pid: int | None
    health: str
    url: str = ""


def _check_port(port: int, setting: str) -> None:
    if not port_is_free(port):
        raise StackError(f"port {port} ({setting}) is in use by another program: stop it or choose another port")


def _start_service(cfg: StackConfig, service: Service) -> int:
    return proc.spawn(cfg.run_dir, cfg.log_dir, service.name, service.argv, service.env, cwd=cfg.home)


def _wait(cfg: StackConfig, name: str, check, what: str) -> None:
    proc.wait_until(check, what, START_TIMEOUT_S, alive=lambda: proc.process(cfg.run_dir, name) is not None,
                    log=cfg.log_dir / f"{name}.log")


def _postgres_up(cfg: StackConfig) -> bool:
    """Own cluster: init once, start when not running. Returns True when something was started."""
    if not cfg.own_postgres:
        postgres.ensure_databases(cfg)
        return False
    started = False
    if proc.process(cfg.run_dir, "postgres") is None:
        postgres.init(cfg)
        pid = postgres.start(cfg)
        proc.record(cfg.run_dir, "postgres", pid, ["postgres", "-p", str(cfg.pg_port)])
        started = True
    postgres.ensure_databases(cfg)
    return started


def deploy(cfg: StackConfig) -> None:
    """(Re)create the work pool, limits, automation and deployments (`make deploy` after editing
    params.yaml's schedule or adding a flow)."""
    out = subprocess.run([cfg.python, "-m", "stack.deploy", str(cfg.home)], cwd=CODE_ROOT, capture_output=True,
                         text=True, env=proc.env_with({**cfg.client_env(), "PYTHONPATH": str(CODE_ROOT),
                                                       "UNLEARN_PROJECT_DIR": str(cfg.project_dir)}))
    (cfg.log_dir / "deploy.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        lines = [line for line in (out.stderr or out.stdout).strip().splitlines() if line.strip()]
        raise StackError(f"creating the work pool and deployments failed: {lines[-1] if lines else '?'} "
                         f"(whole output: {cfg.log_dir / 'deploy.log'})")


def _check_ports(cfg: StackConfig) -> None:
    """Before anything starts: the port of every part that is not running must be free."""
    ports = [("prefect", cfg.prefect_port, "UNLEARN_STACK_PREFECT_PORT"),
             ("mlflow", cfg.mlflow_port, "UNLEARN_STACK_MLFLOW_PORT")]
    if cfg.own_postgres:
        ports.insert(0, ("postgres", cfg.pg_port, "UNLEARN_STACK_PG_PORT"))
    for name, port, setting in ports:
        if proc.process(cfg.run_dir, name) is None:
            _check_port(port, setting)


def _servers_up(cfg: StackConfig) -> set[str]:
    """Start the Prefect and MLflow servers that are not running (in parallel), wait for both."""
    services = [(prefect_server(cfg), lambda: prefect_ok(cfg), "Prefect server"),
                (mlflow_server(cfg), lambda: mlflow_ok(cfg), "MLflow server")]
    started = set()
    for service, _, _ in services:
        if proc.process(cfg.run_dir, service.name) is None:
            _start_service(cfg, service)
            started.add(service.name)
    for service, ok, what in services:
        _wait(cfg, service.name, ok, what)
    return started


def _workers_up(cfg: StackConfig) -> int:
    wanted = [worker(cfg, i) for i in range(1, cfg.workers + 1)]
    missing = [w for w in wanted if proc.process(cfg.run_dir, w.name) is None]
    for w in missing:
        _start_service(cfg, w)
    for i, w in enumerate(wanted, 1):
        _wait(cfg, w.name, lambda i=i: worker_name(i) in online_workers(cfg), f"worker {worker_name(i)}")
    return len(missing)


def up(cfg: StackConfig) -> tuple[StackConfig, bool]:
    """Start whatever is not running; returns (the configuration in use, whether anything started)."""
    previous = StackConfig.load(cfg.home)
    if previous is not None and any(proc.process(previous.run_dir, n) for n in proc.recorded(previous.run_dir)):
        cfg = previous  # parts are running: keep their ports (`make down` first to change them)
    cfg.save()
    _check_ports(cfg)
    pg_started = _postgres_up(cfg)
    servers = _servers_up(cfg)
    if "prefect" in servers or not cfg.env_file.is_file():
        deploy(cfg)  # a restarted server keeps its database: only a fresh start needs this
    workers = _workers_up(cfg)
    write_private(cfg.env_file, "".join(f"{k}={v}\n" for k, v in cfg.client_env().items()))
    return cfg, bool(pg_started or servers or workers)


def down(cfg: StackConfig) -> list[str]:
    """Stop workers, servers, then PostgreSQL; keep the data. Returns what was stopped."""
    stopped = []
    names = proc.recorded(cfg.run_dir)
    order = sorted(n for n in names if n.startswith("worker-")) + ["prefect", "mlflow"]
    for name in order:
        if name in names:
            if proc.process(cfg.run_dir, name) is not None:
                stopped.append(name)
            proc.stop(cfg.run_dir, name)
    if "postgres" in names:
        if proc.process(cfg.run_dir, "postgres") is not None:
            postgres.stop(cfg)
            stopped.append("postgres")
            proc.wait_until(lambda: proc.process(cfg.run_dir, "postgres") is None, "PostgreSQL shutdown", 60)
        (cfg.run_dir / "postgres.json").unlink(missing_ok=True)
    cfg.env_file.unlink(missing_ok=True)  # back to embedded mode
    return stopped


def parts(cfg: StackConfig) -> list[Part]:
    """Each part's state and health (what `make ps` prints)."""
    def state(name: str) -> tuple[str, int | None]:
        pid = proc.pid_of(cfg.run_dir, name)
        if pid is None:
            return "stopped", None
        return ("running" if proc.process(cfg.run_dir, name) else "stale"), pid

    out = []
    if cfg.own_postgres:
        s, pid = state("postgres")
        out.append(Part("postgres", s, pid, "ok" if s == "running" and postgres.healthy(cfg) else "-",
                        f"127.0.0.1:{cfg.pg_port}"))
    else:
        out.append(Part("postgres", "external", None, "ok" if postgres.healthy(cfg) else "failing",
                        cfg.database_url.split("@")[-1]))
    for name, ok, url in (("prefect", prefect_ok(cfg), cfg.prefect_ui),
                          ("mlflow", mlflow_ok(cfg), cfg.mlflow_url)):
        s, pid = state(name)
        out.append(Part(name, s, pid, "ok" if ok else ("failing" if s == "running" else "-"), url))
    online = online_workers(cfg) if out[1].health == "ok" else set()
    for name in sorted(n for n in proc.recorded(cfg.run_dir) if n.startswith("worker-")):
        s, pid = state(name)
        label = worker_name(int(name.split("-")[1]))
        out.append(Part(name, s, pid, "online" if label in online else ("offline" if s == "running" else "-"),
                        label))
    return out


def summary(cfg: StackConfig, seconds: float, started: bool) -> str:
    head = f"stack up in {seconds:.1f} s" if started else "stack already up: nothing to do"
    return "\n".join([
        head,
        f"  Prefect UI   {cfg.prefect_ui}   (API {cfg.prefect_api})",
        f"  MLflow UI    {cfg.mlflow_url}",
        f"  workers      {cfg.workers} in work pool `unlearn` (another machine: see docs/deployment.md)",
        f"  settings     {cfg.env_file} (read by `unlearn` and the flows; `make down` stops it all)",
    ])


def timed_up(cfg: StackConfig) -> str:
    start = time.perf_counter()
    cfg, started = up(cfg)
    return summary(cfg, time.perf_counter() - start, started)
