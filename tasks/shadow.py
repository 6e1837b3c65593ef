"""Shadow models (LiRA / U-LiRA) and multi-seed method runs as Prefect tasks, mapped through the
flow's task runner: local threads by default, a Dask cluster when given its scheduler address.

    run_shadow_attack(store_root, pool_ids, work_dir, spec, train, k=16,
                      dask_address="tcp://scheduler:8786")

Tasks exchange paths and small values only: the pool is a list of sample IDs in the sample store
(never raw data), the plans are small .npz files of booleans, and each shadow task writes one
.npy of per-example confidences. Workers therefore need this package installed and the store and
`work_dir` on a shared file system (docs/verification.md, "Running shadow models on Dask").
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from unlearn_ops.data.store import SampleStore
from unlearn_ops.methods import get_method, run_method
from unlearn_ops.models import load_model
from unlearn_ops.training import TrainConfig
from unlearn_ops.utils import atomic_save_npy, atomic_write_json
from unlearn_ops.verify.shadows import ShadowPlan, ShadowSet, model_seed, plan_shadows, plan_targets, train_shadow
from unlearn_ops.verify.suite import evaluate

POOL_IDS, SHADOW_PLAN, TARGET_PLAN = "pool_ids.json", "shadows.npz", "targets.npz"


def task_runner(dask_address: str | None = None, max_workers: int | None = None):
    """ThreadPoolTaskRunner by default; `prefect_dask.DaskTaskRunner` on an existing cluster
    when `dask_address` (e.g. "tcp://10.0.0.5:8786") is given."""
    if dask_address:
        from prefect_dask import DaskTaskRunner  # imported only when a cluster is used

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)


def where_am_i() -> str:
    """The Dask worker running this task, or "local" (recorded so a run shows where it went)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def save_plan(plan: ShadowPlan, path: Path) -> Path:
    buf = {"member": plan.member, "forget": plan.forget, "targets": plan.targets}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **buf)  # booleans only; loaded with allow_pickle=False
    return path


def load_plan(path: str | Path) -> ShadowPlan:
    with np.load(path, allow_pickle=False) as z:
        return ShadowPlan(z["member"], z["forget"], z["targets"])


@task(name="train-shadow", tags=["gpu"])
def train_shadow_task(store_root: str, work_dir: str, index: int, target: bool, spec: dict[str, Any],
                      train: dict[str, Any], method: str | None = None, params: dict[str, Any] | None = None,
                      device: str = "cpu") -> dict[str, str]:
    """Train shadow (or held-out target) `index`; write its φ over the pool; return the path."""
    work = Path(work_dir)
    pool = SampleStore(Path(store_root)).part(json.loads((work / POOL_IDS).read_text()))
    plan = load_plan(work / (TARGET_PLAN if target else SHADOW_PLAN))
    cfg = model_seed(TrainConfig(**train), index, target)
    _, conf = train_shadow(spec, pool, plan, index, cfg, method, params, device)
    out = work / f"{'target' if target else 'shadow'}-{index:03d}.npy"
    atomic_save_npy(out, conf)
    return {"conf": str(out), "worker": where_am_i()}


@flow(name="shadow-attack", log_prints=True)
def shadow_attack_flow(store_root: str, pool_ids: list[str], work_dir: str, spec: dict[str, Any],
                       train: dict[str, Any], k: int = 4, t: int = 1, seed: int = 0, method: str | None = None,
                       params: dict[str, Any] | None = None, targets: int | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    """Plan, train K shadows and T targets in parallel (the flow's task runner), then attack:
    LiRA without `method`, U-LiRA of `method` over `targets` pool examples with it."""
    work = Path(work_dir)
    atomic_write_json(work / POOL_IDS, list(pool_ids), indent=None)
    if method is not None and targets is None:
        targets = max(2, len(pool_ids) // 10)
    shadows = plan_shadows(len(pool_ids), k, seed, targets if method else None)
    held_out = plan_targets(shadows, t, seed)
    save_plan(shadows, work / SHADOW_PLAN)
    save_plan(held_out, work / TARGET_PLAN)
    common = dict(store_root=unmapped(store_root), work_dir=unmapped(str(work)), spec=unmapped(spec),
                  train=unmapped(train), method=unmapped(method), params=unmapped(params), device=unmapped(device))
    s_futures = train_shadow_task.map(index=list(range(k)), target=unmapped(False), **common)
    t_futures = train_shadow_task.map(index=list(range(t)), target=unmapped(True), **common)
    s_out, t_out = [f.result() for f in s_futures], [f.result() for f in t_futures]
    result = ShadowSet(shadows, np.stack([np.load(o["conf"]) for o in s_out]),
                       held_out, np.stack([np.load(o["conf"]) for o in t_out]), method).attack()
    prefix = "u_lira" if method else "lira"
    metrics = result.as_metrics(prefix)
    print(f"{prefix} with K={k} shadows, T={t} targets: " + ", ".join(f"{n} {v:.3f}" for n, v in metrics.items()))
    return {"metrics": metrics, "k": k, "t": t, "workers": sorted({o["worker"] for o in s_out + t_out})}


def run_shadow_attack(store_root: str | Path, pool_ids: list[str], work_dir: str | Path, spec: dict[str, Any],
                      train: TrainConfig | dict[str, Any], *, dask_address: str | None = None,
                      max_workers: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """`shadow_attack_flow` on the chosen task runner (local threads, or Dask at `dask_address`)."""
    train = asdict(train) if isinstance(train, TrainConfig) else dict(train)
    runner = task_runner(dask_address, max_workers)
    return shadow_attack_flow.with_options(task_runner=runner)(
        str(store_root), list(pool_ids), str(work_dir), spec, train, **kwargs)


# ---------------------------------------------------------------- multi-seed method runs
def with_seed(method: str, params: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """`params` with `seed` set, for methods whose Config has a seed (noop has none)."""
    params = dict(params or {})
    if "seed" in {f.name for f in fields(get_method(method).Config)}:
        params["seed"] = seed
    return params


@task(name="method-seed", tags=["gpu"])
def method_seed_task(model_dir: str, store_root: str, forget_ids: list[str], method: str,
                     params: dict[str, Any] | None, seed: int, forget_classes: list[int] | None = None,
                     device: str = "cpu") -> dict[str, float]:
    """Run `method` with `seed` on the saved base model; return its metrics (no model leaves)."""
    original, _ = load_model(model_dir, device="cpu")
    splits = SampleStore(Path(store_root)).splits(forget_ids)
    result = run_method(method, original, splits, with_seed(method, params, seed), device=device)
    metrics = evaluate(result.model.cpu(), splits, original=original, forget_classes=forget_classes, seed=seed)
    return {**metrics, "seconds": result.seconds, "seed": float(seed)}


@flow(name="multi-seed", log_prints=True)
def multi_seed_flow(model_dir: str, store_root: str, forget_ids: list[str], method: str,
                    params: dict[str, Any] | None, seeds: list[int], forget_classes: list[int] | None = None,
                    device: str = "cpu") -> list[dict[str, float]]:
    futures = method_seed_task.map(model_dir=unmapped(model_dir), store_root=unmapped(store_root),
                                   forget_ids=unmapped(list(forget_ids)), method=unmapped(method),
                                   params=unmapped(params), seed=list(seeds),
                                   forget_classes=unmapped(forget_classes), device=unmapped(device))
    return [f.result() for f in futures]


def run_multi_seed(model_dir: str | Path, store_root: str | Path, forget_ids: list[str], method: str,
                   params: dict[str, Any] | None, seeds: list[int], *, dask_address: str | None = None,
                   max_workers: int | None = None, **kwargs: Any) -> list[dict[str, float]]:
    """One `method` run + evaluation per seed, in parallel on the chosen task runner."""
    runner = task_runner(dask_address, max_workers)
    return multi_seed_flow.with_options(task_runner=runner)(str(model_dir), str(store_root), list(forget_ids),
                                                            method, params, list(seeds), **kwargs)
