"""Orchestration overhead of a deletion batch: where a batch's wall time goes.

    python -m bench overhead            # Fashion-MNIST, the build's CNN and schedule, params.yaml's chains
    python -m bench overhead --quick    # the digits store and a tiny CNN (seconds; what the test runs)

Side by side in one run, a subject deletion and a class deletion go through the real
`deletion_batch` flow in a throwaway workspace (git + DVC repo, the benchmark's store copy, a
temp MLflow registry), against one warm Prefect server. Every call on the flow's path is timed by
what it does, as *self time* (a timed call's time minus the timed calls inside it), so the parts
add up to the batch's wall time:

- prefect: the flow and task engine (state changes, result records, logs) and the server calls;
- mlflow: logging runs and models, registering versions and aliases, downloading the champion;
- dvc: `dvc add/commit/push` of the forget-set record and the purged store;
- data: opening the sample store and loading its parts; validation: the Great Expectations suite;
- model_io: safetensors loads and saves; unlearning and verification: the compute;
- flow_code: the rest (ledger, forget-set files, certificate, audit log).

Orchestration = prefect + mlflow + dvc; the goal is ≤ 10 % of a batch's wall time with a warm
server. The temporary-server mode (no PREFECT_API_URL: every process that runs a flow starts its
own server) is measured separately: one trivial flow in a fresh process, with and without a server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.common import load_note, load_record, md_table, write_results
from unlearn_ops.utils import project_root

ORCHESTRATION = ("prefect", "mlflow", "dvc")
CATEGORIES = ("prefect", "mlflow", "dvc", "data", "validation", "model_io", "unlearning", "verification",
              "flow_code")
GOAL = 0.10
MLFLOW_REGISTER = {"register_model", "set_registered_model_alias", "delete_registered_model_alias",
                   "get_model_version_by_alias", "search_model_versions", "get_registered_model",
                   "create_registered_model", "set_model_version_tag", "get_model_version", "create_model_version",
                   "search_registered_models", "set_registered_model_tag", "delete_model_version_tag"}
MLFLOW_LOAD = {"download_artifacts", "load_model", "get_model_version_download_uri"}
TINY_SPEC = {"arch": "cnn", "in_channels": 1, "num_classes": 10, "image_size": 8, "widths": [8, 16], "hidden": 32}


# ----------------------------------------------------------------------------------- self-time timers
class Timers:
    """Self time per category: a timed call's duration minus the timed calls it made."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    def _stack(self) -> list[list[float]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def wrap(self, category: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            stack = self._stack()
            stack.append([0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                children = stack.pop()[0]
                self.seconds[category] += spent - children
                self.calls[category] += 1
                if stack:
                    stack[-1][0] += spent

        # A signature with resolved annotations: Prefect validates a flow's parameters against them, and the
        # strings of a `from __future__ import annotations` module name things that only that
        # module's globals (not this one's) define.
        with contextlib.suppress(Exception):
            timed.__signature__ = inspect.signature(fn, eval_str=True)
        timed.__overhead_timed__ = True
        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _mlflow_category(name: str) -> str:
    return "mlflow.register" if name in MLFLOW_REGISTER else "mlflow.load" if name in MLFLOW_LOAD else "mlflow.log"


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[Timers]:
    """Wrap every call on a deletion batch's path by category; undone on exit."""
    import mlflow
    import mlflow.artifacts
    import mlflow.pyfunc
    from mlflow.tracking.client import MlflowClient
    from prefect.flows import Flow
    from prefect.tasks import Task

    import tasks.intake
    import tasks.unlearning
    import tasks.versioning
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.families import FAMILIES, Family

    undo: list[Callable[[], None]] = []

    def patch(owner: Any, name: str, category: str) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        if getattr(original, "__overhead_timed__", False):
            return
        if isinstance(original, (staticmethod, classmethod)):
            return
        wrapped = timers.wrap(category, original)
        if isinstance(owner, type) or not _frozen(owner):
            setattr(owner, name, wrapped)
            undo.append(lambda: setattr(owner, name, original))
        else:
            object.__setattr__(owner, name, wrapped)
            undo.append(lambda: object.__setattr__(owner, name, original))

    def engine(cls: type, inner: str) -> None:
        """The engine's call (`prefect`) around the decorated function (`inner`)."""
        call = cls.__call__

        @functools.wraps(call)
        def outer(self, *args, **kwargs):
            if not getattr(self.fn, "__overhead_timed__", False):
                original = self.fn
                self.fn = timers.wrap(inner, original)
                undo.append(lambda obj=self, fn=original: setattr(obj, "fn", fn))
            return timed_call(self, *args, **kwargs)

        timed_call = timers.wrap("prefect", call)
        cls.__call__ = outer
        undo.append(lambda: setattr(cls, "__call__", call))

    engine(Flow, "flow_code")
    engine(Task, "flow_code")
    for name in ("start_run", "end_run", "log_params", "log_metrics", "log_artifact", "log_artifacts", "set_tags",
                 "register_model", "set_tracking_uri", "set_experiment", "get_experiment_by_name", "create_experiment",
                 "search_runs", "search_experiments", "search_model_versions", "search_registered_models"):
        if callable(getattr(mlflow, name, None)):
            patch(mlflow, name, _mlflow_category(name))
    patch(mlflow.pyfunc, "log_model", "mlflow.log")
    patch(mlflow.pyfunc, "load_model", "mlflow.load")
    patch(mlflow.artifacts, "download_artifacts", "mlflow.load")
    for name, member in vars(MlflowClient).items():
        if callable(member) and not name.startswith("_"):
            patch(MlflowClient, name, _mlflow_category(name))
    patch(tasks.versioning, "dvc", "dvc")
    patch(tasks.intake, "run_suite", "validation")
    for name, member in vars(SampleStore).items():
        if callable(member) and (not name.startswith("_") or name == "__init__"):
            patch(SampleStore, name, "data")
    patch(tasks.unlearning, "run_method", "unlearning")
    patch(Family, "verify", "verification")
    for fam in FAMILIES.values():
        patch(fam, "load", "model_io")
        patch(fam, "save", "model_io")
    try:
        yield timers
    finally:
        for fn in reversed(undo):
            fn()


def _frozen(obj: Any) -> bool:
    params = getattr(type(obj), "__dataclass_params__", None)
    return bool(params and params.frozen)


def breakdown(timers: Timers, wall: float) -> dict[str, Any]:
    """Seconds and shares per category (MLflow's parts summed and kept), orchestration share, verdict."""
    parts = {c: 0.0 for c in CATEGORIES}
    mlflow_parts = {}
    for key, s in timers.seconds.items():
        if key.startswith("mlflow."):
            mlflow_parts[key.split(".", 1)[1]] = round(s, 3)
            parts["mlflow"] += s
        else:
            parts[key] += s
    measured = sum(parts.values())
    orchestration = sum(parts[c] for c in ORCHESTRATION)
    return {"wall_s": round(wall, 2), "measured_s": round(measured, 2),
            "seconds": {c: round(s, 3) for c, s in parts.items()},
            "share": {c: round(s / wall, 4) if wall else 0.0 for c, s in parts.items()},
            "mlflow": mlflow_parts, "calls": dict(timers.calls),
            "orchestration_s": round(orchestration, 2), "orchestration_share": round(orchestration / wall, 4),
            "goal_met": orchestration / wall <= GOAL}


# ----------------------------------------------------------------------------------- the workspace
def _run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def monolithic(params: dict[str, Any], model: str) -> dict[str, Any]:
    """params for a one-model (unsharded) classifier: the build's sharding off, chains ending in `retrain`."""
    def exact(step: Any) -> Any:
        return "retrain" if step == "sharded_retrain" else step

    train = {**params["train"], "shards": 1, "slices": 1, "pool_fraction": 0.0, "pool_epochs": 0}
    policy = {kind: [exact(step) for step in chain] for kind, chain in params["policy"][model].items()}
    return {**params, "train": train, "policy": {**params["policy"], model: policy}}


def workspace(root: Path, quick: bool) -> tuple[Path, str, dict[str, Any]]:
    """A git + DVC repository with params, the store and a registered champion; (root, model, info)."""
    from bench import references
    from tasks.registry import CHAMPION, log_and_register, set_alias
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.families import family
    from unlearn_ops.models import build_model
    from unlearn_ops.training import TrainConfig, fit

    dataset, model_name = ("digits", "digits-classifier") if quick else ("fmnist", "fmnist-classifier")
    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    store_rel = f"data/store/{dataset}"
    params["models"] = {model_name: {"store_dir": store_rel, "build": "train"}}
    params["policy"] = {model_name: params["policy"]["fmnist-classifier"]}
    built = project_root() / "models" / model_name, project_root() / store_rel
    use_build = not quick and all((p / n).is_file() for p, n in zip(built, ("spec.json", "index.csv"), strict=True))
    if not use_build:  # a monolithic model stands in for the build: its chains end in `retrain`
        params = monolithic(params, model_name)
    if quick:  # the tiny CNN's schedule, as the tests train it
        params["train"] = {**params["train"], "epochs": 15, "lr": 0.003, "batch_size": 64}
        params["unlearn"] = {"neuron_perturbation": {"k_p": 16, "n_check": 100}}
    if "approval" in params:  # a person's approval would pause the flow: the benchmark approves nothing
        params["approval"] = {k: (v if not isinstance(v, str) else "automatic") for k, v in params["approval"].items()}
    root.mkdir(parents=True, exist_ok=True)
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(root / "dvc-remote")], root)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for d in ("inbox", "processed", "quarantine"):
        (root / "data" / "requests" / d).mkdir(parents=True, exist_ok=True)
    (root / "data" / "forget_sets").mkdir(parents=True, exist_ok=True)
    source = built[1] if use_build else references.store(dataset).root
    shutil.copytree(source, root / store_rel)
    store = SampleStore(root / store_rel)
    if quick:
        model = fit(build_model(TINY_SPEC), store.splits().retain,
                    TrainConfig(epochs=15, lr=3e-3, batch_size=64, seed=0, device="cpu"))
        spec, seconds, origin = TINY_SPEC, None, "tiny CNN trained here"
    elif use_build:  # the pipeline's own model and store (`make build`), as a batch would find them
        model, spec = family("classifier").load(built[0])  # as the family saves it (a sharded model's state too)
        metrics = project_root() / "metrics" / "train.json"
        seconds = json.loads(metrics.read_text()).get("train_seconds") if metrics.is_file() else None
        origin = "the build's model and store (models/, data/store/)"
    else:
        model, seconds = references.base_model(dataset, seed=0)
        spec, origin = references.spec_for(store), "the benchmark cache's base model (the build's recipe)"
    directory = family("classifier").save(model, spec, root / "models" / model_name)
    version = log_and_register(directory, name=model_name, family="classifier", experiment="build", run_name="build",
                               tags={"lineage": "build", "method": "train"})
    set_alias(model_name, CHAMPION, version)
    return root, model_name, {"dataset": dataset, "base_train_seconds": seconds, "store_size": len(store.active_ids()),
                              "origin": origin}


def requests_for(root: Path, model: str, dataset: str) -> dict[str, dict[str, Any]]:
    """One subject (the first with ≥ 10 samples, none in the deleted class, outside a sharded
    build's warm-start pool: the everyday request) and one class (Dress / 3, else the first left)."""
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.models.sharded import POOL, ShardMap

    store = SampleStore(root / "data" / "store" / dataset)
    idx = store.index.loc[store.active_ids()]
    klass = 3 if (idx.label == 3).any() else int(sorted(idx.label.unique())[0])
    train = yaml.safe_load((root / "params.yaml").read_text())["train"]
    pooled = ShardMap.assign(list(idx.index), idx.subject_id.tolist(), 1, 1, float(train.get("pool_fraction") or 0))
    idx = idx[(idx.subject_id != "") & (pooled.shard != POOL)]
    sizes = idx.groupby("subject_id").label.agg(size="size", has_class=lambda y: bool((y == klass).any()))
    fits = sizes[(sizes["size"] >= 10) & ~sizes["has_class"]].sort_index()
    if fits.empty:
        raise RuntimeError(f"no subject with >= 10 samples outside class {klass} in {store.root}")
    subject = fits.index[0]
    base = {"model": model, "requester": "bench@example.org", "reason": "bench overhead"}
    return {"subject": {**base, "request_id": "bench-subject", "kind": "subject", "subject_id": str(subject)},
            "class": {**base, "request_id": "bench-class", "kind": "class", "class_label": klass}}


# ----------------------------------------------------------------------------------- temporary servers
PROBE = ("import time; t = time.perf_counter(); import flows; from prefect import flow\n"
         "@flow\ndef probe():\n    return 1\nprobe(); print(time.perf_counter() - t)")


def one_flow_process(env: dict[str, str]) -> float:
    """Wall seconds of a fresh process that runs one trivial flow (imports included)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=project_root())
    if done.returncode != 0:
        raise RuntimeError(f"the one-flow probe failed: {done.stderr[-1500:]}")
    return time.perf_counter() - start


def temporary_server_cost(api_url: str, home: Path) -> dict[str, float]:
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    base["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"  # a busy machine is slow, not broken
    fresh = {**base, "PREFECT_HOME": str(home / "fresh")}
    reused = {**base, "PREFECT_HOME": str(home / "reused")}
    one_flow_process(reused)  # creates the database the next run reuses
    with_server = one_flow_process({**base, "PREFECT_API_URL": api_url})
    return {"process_with_warm_server_s": round(with_server, 2),
            "process_temporary_server_fresh_db_s": round(one_flow_process(fresh), 2),
            "process_temporary_server_existing_db_s": round(one_flow_process(reused), 2)}


# ----------------------------------------------------------------------------------- the run
def drain_prefect_workers(timeout_s: float = 30.0) -> None:
    """Send the queued run logs and events while the server still runs. Left alone, the workers
    outlive it and keep reconnecting to a closed port: the process spun after writing its results,
    and a test run in the same process hung in the next flow that paused for input."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


def run(quick: bool, work: Path, probe: bool = True) -> dict[str, Any]:
    from flows.server import prefect_server

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    started = time.perf_counter()
    with prefect_server(log_file=work / "prefect-server.log", echo=lambda line: print(line, flush=True)) as url:
        server_start = time.perf_counter() - started
        temporary = temporary_server_cost(url, work / "probe") if probe else None
        root, model, info = workspace(work / "ws", quick)
        from flows.deletion_batch import deletion_batch

        batches = {}
        for kind, request in requests_for(root, model, info["dataset"]).items():
            timers = Timers()
            with instrumented(timers):
                start = time.perf_counter()
                result = deletion_batch(requests=[request], root=str(root))
                wall = time.perf_counter() - start
            cert = result.get("certificate") or {}
            attempts = [a for m in result.get("models") or [] for a in m.get("attempts", [])]
            batches[kind] = {**breakdown(timers, wall), "outcome": cert.get("outcome"),
                             "methods": [f"{a.get('method')}: {a.get('status')}" for a in attempts]}
            print(f"{kind}: {wall:.1f} s, orchestration {batches[kind]['orchestration_share']:.1%}", flush=True)
        drain_prefect_workers()
    return {"quick": quick, "model": info, "server_start_s": round(server_start, 2), "temporary_server": temporary,
            "batches": batches, "goal": GOAL, "load": load_record(),
            "verdicts": {f"{k}: orchestration <= {GOAL:.0%} (warm server)": v["goal_met"] for k, v in batches.items()}}


def markdown(r: dict[str, Any]) -> str:
    what = ("the digits store and a tiny CNN (`--quick`)" if r["quick"] else
            f"Fashion-MNIST, the build's CNN and schedule ({r['model']['origin']}), params.yaml's method chains")
    rows = []
    for c in CATEGORIES:
        row = [c + (" (orchestration)" if c in ORCHESTRATION else "")]
        for b in r["batches"].values():
            row.append(f"{b['seconds'][c]:.2f} s ({b['share'][c]:.1%})")
        rows.append(row)
    rows.append(["**orchestration**"] + [f"**{b['orchestration_s']:.2f} s ({b['orchestration_share']:.1%})**"
                                         for b in r["batches"].values()])
    rows.append(["**batch wall time**"] + [f"**{b['wall_s']:.1f} s**" for b in r["batches"].values()])
    header = ["part", *(f"{k} deletion" for k in r["batches"])]
    t = r["temporary_server"]
    if t is None:
        server_lines = [f"- One server for the whole run: healthy in {r['server_start_s']:.1f} s. The temporary-server "
                        "mode was not measured in this run (`--no-probe`)."]
    else:
        server_lines = [
            f"- One server for a whole command (`make demo`, `make build`: `python -m flows.server -- …`): started "
            f"and healthy in {r['server_start_s']:.1f} s, once.",
            f"- A fresh process that runs one trivial flow: {t['process_with_warm_server_s']:.1f} s with the warm "
            f"server, {t['process_temporary_server_existing_db_s']:.1f} s with its own temporary server (existing "
            f"database), {t['process_temporary_server_fresh_db_s']:.1f} s on a fresh database (migrations). The "
            f"temporary-server mode costs each such process ≈ "
            f"{t['process_temporary_server_existing_db_s'] - t['process_with_warm_server_s']:.1f} s "
            f"({t['process_temporary_server_fresh_db_s'] - t['process_with_warm_server_s']:.1f} s the first time); "
            "`make demo` ran five such processes (four build stages and the demo) before it shared one server."]
    mlflow_rows = [[k, *(f"{b['mlflow'].get(p, 0.0):.2f} s" for b in r["batches"].values())]
                   for k, p in (("log (runs, models)", "log"), ("register (versions, aliases)", "register"),
                                ("load (champion download)", "load"))]
    lines = [
        f"Model: {what}. Both batches run in one process, one after the other, through the real `deletion_batch` "
        "flow against one warm Prefect server (the flow and task engine, MLflow in a temp sqlite registry, DVC "
        "with a local remote). Each part is *self time*: a timed call minus the timed calls inside it, so the "
        "parts add up to the wall time.", "",
        md_table(header, rows), "",
        "Methods: " + "; ".join(f"{k}: {', '.join(b['methods']) or '-'} → {b['outcome']}"
                                for k, b in r["batches"].items()) + ".", "",
        "MLflow by kind of call:", "", md_table(["MLflow", *header[1:]], mlflow_rows), "",
        "## Prefect server", "", *server_lines, "",
        "## Verdicts", "",
        *(f"- {k}: **{'met' if v else 'not met'}**" for k, v in r["verdicts"].items()), "",
        f"{load_note(r.get('load'))}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits store and a tiny CNN (seconds)")
    p.add_argument("--out-dir", default=None, help="where overhead.json/.md go (default docs/benchmarks)")
    p.add_argument("--keep", action="store_true", help="keep the throwaway workspace (printed)")
    p.add_argument("--no-probe", action="store_true", help="skip the temporary-server processes (three server starts)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        result = run(a.quick, work, probe=not a.no_probe)
    finally:
        if a.keep:
            print(f"workspace kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = write_results("overhead", result, markdown(result), Path(a.out_dir) if a.out_dir else None)
    print(json.dumps(result["verdicts"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
