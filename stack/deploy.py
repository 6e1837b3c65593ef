"""Everything `make up` creates inside the Prefect server (idempotent; re-run by `make deploy`):
the process work pool `unlearn` with its queues, the `gpu` tag's concurrency limit, the automation
that marks a run without heartbeats Crashed, and the deployments.

Run as `python -m stack.deploy <stack dir>` with PREFECT_API_URL set (prefect reads its settings
at import). Deployments name their flow by module path (`flows.deletion_batch.deletion_batch`):
a worker runs the code installed on its machine (PYTHONPATH = the checkout), nothing is copied.
"""

from __future__ import annotations

import importlib
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from stack.config import POOL, QUEUES, StackConfig
from tasks.workspace import Workspace

ZOMBIE_AUTOMATION = "unlearn: crash flow runs that stopped sending heartbeats"
BATCH_DESCRIPTION = (
    "Process pending deletion requests: the files in the project's data/requests/inbox/ plus the "
    "`requests` given here (Custom run → requests → Add item: kind, model and the field the kind needs, "
    "e.g. class + fmnist-classifier + class_label Dress). A run that finds the open batch taken by another "
    "run ends `Deferred` and queues its requests for the next run. The project is the worker's "
    "UNLEARN_PROJECT_DIR.")

# (module:flow, queue): the build stages, as `dvc repro` runs them one by one
BUILD_FLOWS = [
    ("flows.import_data:import_data", "default"), ("flows.validate:validate", "default"),
    ("flows.train:train", "gpu"), ("flows.train:register", "default"),
    ("flows.build_gan:gan_import", "default"), ("flows.build_gan:gan_train", "gpu"),
    ("flows.build_gan:gan_register", "default"),
    ("flows.build_text:text_import", "default"), ("flows.build_text:text_train", "gpu"),
    ("flows.build_text:text_register", "default"),
    ("flows.build_llm:build_llm", "gpu"),
]


def load_flow(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def ensure_pool(client) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(POOL)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=POOL, type="process", description="unlearn-pipeline: process workers (one per machine or more)",
            base_job_template=ProcessWorker.get_default_base_job_template()))
    for queue in QUEUES:
        try:
            client.create_work_queue(name=queue, work_pool_name=POOL)
        except ObjectAlreadyExists:
            pass


def ensure_zombie_automation(cfg: StackConfig) -> None:
    """Prefect's documented recipe (docs: detect zombie flows): after a heartbeat, expect another
    heartbeat or a final state within `zombie_s`, else set the run Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
        for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
        within=timedelta(seconds=cfg.zombie_s))
    action = ChangeFlowRunState(state=StateType.CRASHED,
                                message=f"no heartbeat for {cfg.zombie_s} s: the worker or its machine is gone")
    try:
        existing = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:
        existing = None
    if existing is None:
        Automation(name=ZOMBIE_AUTOMATION, trigger=trigger, actions=[action]).create()
    else:
        existing.trigger, existing.actions = trigger, [action]
        existing.update()


def batch_schedule(project_dir: Path) -> dict[str, Any]:
    """params.yaml `batch.schedule_cron` and `batch.schedule_active` (default: active)."""
    batch = Workspace.at(project_dir).params.get("batch") or {}
    if not batch.get("schedule_cron"):
        raise ValueError(f"{project_dir / 'params.yaml'} has no batch.schedule_cron")
    return {"cron": str(batch["schedule_cron"]), "active": bool(batch.get("schedule_active", True))}


def to_deployment(flow, name: str, queue: str, **kwargs):
    from prefect.deployments.runner import EntrypointType

    # the form is the flow's parameter schema: deletion_batch keeps `root` out of it (the project
    # is the worker's UNLEARN_PROJECT_DIR) and draws `requests` as one form per request
    return flow.to_deployment(name=name, work_queue_name=queue, entrypoint_type=EntrypointType.MODULE_PATH,
                              tags=["unlearn-pipeline"], **kwargs)


def deployments(cfg: StackConfig) -> list:
    from prefect.schedules import Cron

    schedule = batch_schedule(cfg.project_dir)
    out = [to_deployment(load_flow("flows.deletion_batch:deletion_batch"), "scheduled", "gpu",
                         schedules=[Cron(schedule["cron"], timezone="UTC", active=schedule["active"])],
                         description=BATCH_DESCRIPTION)]
    out += [to_deployment(load_flow(spec), "on-demand", queue) for spec, queue in BUILD_FLOWS]
    return out


def main(home: str) -> None:
    from prefect import deploy
    from prefect.client.orchestration import get_client

    cfg = StackConfig.load(Path(home))
    if cfg is None:
        raise SystemExit(f"{home} holds no stack.json: run `make up` first")
    with get_client(sync_client=True) as client:
        ensure_pool(client)
        client.create_concurrency_limit(tag="gpu", concurrency_limit=cfg.gpu_slots)  # an upsert
    ensure_zombie_automation(cfg)
    ids = deploy(*deployments(cfg), work_pool_name=POOL, build=False, push=False, print_next_steps_message=False,
                 ignore_warnings=True)
    print(f"{len(ids)} deployments in work pool {POOL!r}")


if __name__ == "__main__":
    main(sys.argv[1])
