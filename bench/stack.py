"""Team mode, measured: `make up` from nothing, what a flow run costs on the warm server vs a
temporary one, a class deletion through a worker split into Prefect / MLflow / DVC / compute, and
N queued flow runs on 1 vs 2 workers.

    python -m bench stack [--quick] [--out-dir DIR]

Everything runs on a fresh stack of its own (temp folder, free ports, two workers), torn down at
the end; the project is a tiny one (sklearn digits, a small CNN registered on that stack's MLflow
server), so the numbers are the fixed cost per run, not a real model's compute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import fmt, load_record, md_table, mean_std, write_results
from stack import proc
from stack.config import CODE_ROOT, POOL, StackConfig, free_port

MODEL = "digits-bench"
SPEC = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 8, "widths": [8, 16], "hidden": 32}
PARAMS = {
    "models": {MODEL: {"store_dir": "data/store/digits"}},
    "policy": {MODEL: {"class": ["finetune", "retrain"]}},
    "unlearn": {"retrain": {"epochs": 15, "lr": 0.003, "batch_size": 64},
                "finetune": {"epochs": 1, "lr": 0.001, "batch_size": 64}},
    "gates": {"class": {"forget_accuracy": {"max": 0.05}, "retained_test_accuracy_drop": {"max": 0.05}}},
    "batch": {"device": "cpu", "seed": 0, "schedule_cron": "0 * * * *", "schedule_active": False},
}
# where each deletion_batch task's time goes (by task name)
CATEGORY = {"intake": "intake (schema + GX)", "extract-forget-set": "DVC", "apply-deletion": "DVC",
            "fetch-champion": "MLflow", "register-candidate": "MLflow", "promote": "MLflow",
            "unlearn": "compute", "verify": "compute"}


# ----------------------------------------------------------------------------- the stack
def stack_env(home: Path, project: Path) -> dict[str, str]:
    return {**os.environ, "UNLEARN_STACK_DIR": str(home), "UNLEARN_PROJECT_DIR": str(project),
            "UNLEARN_STACK_PG_PORT": str(free_port()), "UNLEARN_STACK_PREFECT_PORT": str(free_port()),
            "UNLEARN_STACK_MLFLOW_PORT": str(free_port()), "UNLEARN_STACK_WORKERS": "2",
            "PYTHONPATH": str(CODE_ROOT)}


def timed(argv: list[str], env: dict[str, str], cwd: Path = CODE_ROOT) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def stack_command(command: str, env: dict[str, str]) -> float:
    return timed([sys.executable, "-m", "stack", command], env)


def tiny_project(root: Path, mlflow_url: str) -> Path:
    """git + DVC repo, params, digits store, a small CNN trained for seconds, registered as champion."""
    import torch

    from tasks.registry import CHAMPION, log_and_register, set_alias
    from unlearn_ops.data.sources import load_digits
    from unlearn_ops.data.store import build_store
    from unlearn_ops.models import build_model, save_model
    from unlearn_ops.training import TrainConfig, fit

    for argv in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                 [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(argv, cwd=root, check=True, capture_output=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for d in ("inbox", "processed", "quarantine"):
        (root / "data" / "requests" / d).mkdir(parents=True, exist_ok=True)
    store = build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    torch.manual_seed(0)
    model = fit(build_model(SPEC), store.splits().retain, TrainConfig(epochs=15, lr=3e-3, batch_size=64, device="cpu"))
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_url
    version = log_and_register(save_model(model, SPEC, root / "models" / MODEL), name=MODEL, experiment="build",
                               run_name="build", tags={"lineage": "build", "method": "train"})
    set_alias(MODEL, CHAMPION, version)
    return root


class Api:
    """The Prefect REST calls the benchmark makes (what the UI makes)."""

    def __init__(self, cfg: StackConfig):
        self.http = httpx.Client(base_url=cfg.prefect_api, timeout=30)

    def deployment_id(self, name: str) -> str:
        return self.http.get(f"/deployments/name/{name}").raise_for_status().json()["id"]

    def noop_deployment(self) -> str:
        """bench/stack_noop.py deployed on the `default` queue of the work pool."""
        flow_id = self.http.post("/flows/", json={"name": "stack-noop"}).raise_for_status().json()["id"]
        body = {"name": "bench", "flow_id": flow_id, "entrypoint": "bench.stack_noop.noop", "work_pool_name": POOL,
                "work_queue_name": "default", "parameter_openapi_schema": {"type": "object", "properties": {}},
                "enforce_parameter_schema": False}
        return self.http.post("/deployments/", json=body).raise_for_status().json()["id"]

    def run(self, deployment_id: str, parameters: dict[str, Any], project: Path | None = None) -> str:
        body: dict[str, Any] = {"parameters": parameters}
        if project is not None:
            body["job_variables"] = {"env": {"UNLEARN_PROJECT_DIR": str(project)}}
        return self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body).raise_for_status().json()["id"]

    def wait_all(self, ids: list[str], timeout: float = 3600) -> list[dict[str, Any]]:
        start = time.monotonic()
        while True:
            runs = self.http.post("/flow_runs/filter", json={"flow_runs": {"id": {"any_": ids}}}).raise_for_status().json()
            if len(runs) == len(ids) and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                                             for r in runs):
                bad = [r["state_type"] for r in runs if r["state_type"] != "COMPLETED"]
                if bad:
                    raise SystemExit(f"flow runs ended {bad}")
                return runs
            if time.monotonic() - start > timeout:
                raise SystemExit(f"flow runs not finished after {timeout} s")
            time.sleep(0.5)

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        body = {"task_runs": {"flow_run_id": {"any_": [run_id]}}}
        return self.http.post("/task_runs/filter", json=body).raise_for_status().json()


# ----------------------------------------------------------------------------- measurements
def per_run_overhead(cfg: StackConfig, project: Path, repeats: int) -> dict[str, list[float]]:
    """The same no-request deletion_batch call in a fresh process: on a temporary Prefect server
    (embedded mode) and on the warm one; minus a process that only imports the flow."""
    call = f"from flows.deletion_batch import deletion_batch; deletion_batch(requests=[], root={str(project)!r})"
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    embedded = {**base, "PREFECT_HOME": str(project / ".prefect-embedded"), "UNLEARN_STACK_DIR": str(project / "none"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'embedded.db'}", "PYTHONPATH": str(CODE_ROOT)}
    team = {**base, **cfg.client_env(), "PYTHONPATH": str(CODE_ROOT)}
    python = [sys.executable, "-c"]
    timed(python + [call], embedded)  # first use creates the temporary server's database: not counted
    out: dict[str, list[float]] = {"import only": [], "temporary server": [], "warm server": []}
    for _ in range(repeats):
        out["import only"].append(timed(python + ["import flows.deletion_batch"], team))
        out["temporary server"].append(timed(python + [call], embedded))
        out["warm server"].append(timed(python + [call], team))
    return out


def class_deletion(api: Api, project: Path) -> dict[str, Any]:
    """One class request through a worker, split by where its time went."""
    request = {"request_id": "bench-class-3", "model": MODEL, "kind": "class", "class_label": 3, "reason": "benchmark"}
    start = time.time()
    run_id = api.run(api.deployment_id("deletion_batch/scheduled"), {"requests": [request]}, project)
    (run,) = api.wait_all([run_id])
    total = time.time() - start
    parts: dict[str, float] = {}
    for t in api.task_runs(run_id):
        category = next((c for prefix, c in CATEGORY.items() if t["name"].startswith(prefix)), "other tasks")
        parts[category] = parts.get(category, 0.0) + float(t["total_run_time"])
    from datetime import datetime

    def ts(key: str) -> float:
        return datetime.fromisoformat(run[key].replace("Z", "+00:00")).timestamp()

    pickup = ts("start_time") - ts("created")
    flow = float(run["total_run_time"])
    return {"total_s": round(total, 2), "flow_run_s": round(flow, 2),
            "parts_s": {"queue, worker pick-up, flow-run process start and imports": round(pickup, 2),
                        **{k: round(v, 2) for k, v in sorted(parts.items())},
                        "flow code between tasks (ledger, certificate, Prefect states)":
                            round(flow - sum(parts.values()), 2),
                        "end state reaching the API / poll": round(total - pickup - flow, 2)}}


def queued(api: Api, deployment_id: str, n: int, parameters: dict[str, Any], project: Path | None) -> float:
    """Runs per minute: `n` flow runs created at once, until the last one is Completed."""
    start = time.perf_counter()
    ids = [api.run(deployment_id, parameters, project) for _ in range(n)]
    api.wait_all(ids)
    return 60 * n / (time.perf_counter() - start)


def throughput(api: Api, cfg: StackConfig, project: Path, sizes: dict[str, list[int]]) -> list[dict[str, Any]]:
    noop = api.noop_deployment()
    batch = api.deployment_id("deletion_batch/scheduled")
    rows = []
    for workers in (2, 1):
        if workers == 1:
            proc.stop(cfg.run_dir, "worker-2")
        for kind, ns in sizes.items():
            for n in ns:
                dep, params, proj = (noop, {}, None) if kind == "noop" else (batch, {"requests": []}, project)
                rows.append({"flow": kind, "n": n, "workers": workers,
                             "runs_per_min": round(queued(api, dep, n, params, proj), 2)})
    return rows


# ----------------------------------------------------------------------------- report
def markdown(p: dict[str, Any]) -> str:
    o = p["overhead_s"]
    lines = ["Team mode (`make up`) on this machine: PostgreSQL, Prefect server + process workers, MLflow server, "
             "all on loopback. Command: `python -m bench stack" + (" --quick" if p["quick"] else "") + "`.",
             "",
             "## Starting and stopping",
             "",
             md_table(["step", "seconds"], [["`make up` from nothing (initdb, migrations, deployments, 2 workers)",
                                             f"{p['up_from_nothing_s']:.1f}"],
                                            ["`make up` again (everything running: a no-op)", f"{p['up_again_s']:.2f}"],
                                            ["`make down`", f"{p['down_s']:.1f}"]]),
             "",
             "## What one flow run costs: warm server vs a temporary one",
             "",
             "The same `deletion_batch(requests=[])` call (nothing to do) in a fresh process, "
             + ("once" if p["repeats"] == 1 else f"{p['repeats']} times") + " each (mean ± std); *orchestration* is "
             "the process time minus a process that only imports the flow module. The temporary server is what "
             "every command starts in embedded mode; the warm one is `make up`'s.",
             "",
             md_table(["", "process (s)", "orchestration (s)"],
                      [[k, fmt(v, 2), "-" if k == "import only" else
                        f"{mean_std(v)[0] - mean_std(o['import only'])[0]:.2f}"] for k, v in o.items()]),
             "",
             "## A class deletion through a worker",
             "",
             f"One class request (tiny CNN on digits) submitted as a Custom run; {p['class_deletion']['total_s']:.1f} s "
             f"from the REST call to Completed (the flow itself {p['class_deletion']['flow_run_s']:.1f} s):",
             "",
             md_table(["where", "seconds", "share"],
                      [[k, f"{v:.2f}", f"{100 * v / p['class_deletion']['total_s']:.0f} %"]
                       for k, v in p["class_deletion"]["parts_s"].items()]),
             "",
             "Task times come from Prefect's task runs (`total_run_time`); DVC = writing and versioning the "
             "forget-set record and the purged store (`dvc add`, local cache); MLflow = downloading the champion, "
             "logging + registering the candidate, moving the alias. On this tiny model the compute is a small "
             "part; on Fashion-MNIST a class deletion's compute is minutes (docs/benchmarks/class.md), so the "
             "fixed cost above is what the stack adds per batch.",
             "",
             "## Queued flow runs, 1 vs 2 workers",
             "",
             "N flow runs created at once through the REST API; throughput = N / (time until the last is "
             "Completed). Each worker runs one flow run at a time (`--limit 1`). `noop` is a flow that does "
             "nothing (bench/stack_noop.py: orchestration only); `no-request batch` is `deletion_batch` with no "
             "requests (its flow-run process imports torch, MLflow, GX and DVC: ~10 s of CPU each). A real batch "
             "was not used for N = 50: on 2 shared cores that is an hour of compute.",
             "",
             md_table(["flow", "N", "runs/min, 1 worker", "runs/min, 2 workers", "ratio 2/1"],
                      [[r1["flow"], r1["n"], f"{r1['runs_per_min']:.1f}", f"{r2['runs_per_min']:.1f}",
                        f"{r2['runs_per_min'] / r1['runs_per_min']:.2f}"]
                       for r2 in p["throughput"] if r2["workers"] == 2
                       for r1 in p["throughput"] if r1["workers"] == 1 and (r1["flow"], r1["n"]) == (r2["flow"], r2["n"])]),
             "",
             "Both workers share this machine's 2 cores (and other jobs), so a second worker here adds a "
             "process, not a CPU: the ratio is a floor for a second machine.",
             "",
             f"Load: 1-minute load average {p['load']['start']:.1f} at start, {p['load']['end']:.1f} at the end, "
             f"on {p['load']['cores']} cores."]
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench stack")
    ap.add_argument("--quick", action="store_true", help="N = 1, 3 and one repeat (minutes, for a smoke test)")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    repeats = 1 if a.quick else 3
    sizes = {"noop": [1, 3] if a.quick else [1, 10, 50], "no-request batch": [1, 3] if a.quick else [1, 10]}
    work = Path(tempfile.mkdtemp(prefix="unlearn-bench-stack-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, which must enter the folder
    project, home = work / "project", work / "stack"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    env = stack_env(home, project)
    try:
        up_s = stack_command("up", env)
        up_again_s = stack_command("up", env)
        cfg = StackConfig.load(home)
        tiny_project(project, cfg.mlflow_url)
        api = Api(cfg)
        payload = {"quick": a.quick, "repeats": repeats, "up_from_nothing_s": round(up_s, 2),
                   "up_again_s": round(up_again_s, 2), "overhead_s": per_run_overhead(cfg, project, repeats),
                   "class_deletion": class_deletion(api, project),
                   "throughput": throughput(api, cfg, project, sizes)}
    finally:
        down_s = stack_command("down", env)
        shutil.rmtree(work, ignore_errors=True)
    payload.update(down_s=round(down_s, 2), load=load_record())
    out = write_results("stack", payload, markdown(payload), a.out_dir)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return payload
