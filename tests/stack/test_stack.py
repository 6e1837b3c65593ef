"""Deletion batches through the team stack: REST-triggered runs on process workers, registered on
the MLflow server; two workers; a worker machine dying mid-batch; the MLflow server restarting."""

from __future__ import annotations

import json
import tempfile
import time

import mlflow
import pytest
from mlflow import MlflowClient

from stack import proc
from tests.stack.conftest import ZOMBIE_S, build_project, project_params, run_stack, tracking
from unlearn_ops.ledger import Ledger

pytestmark = pytest.mark.stack

# retraining for long enough (seconds) that a test can act while it runs
SLOW_RETRAIN = {"epochs": 400, "lr": 0.003, "batch_size": 64}


def class_request(request_id: str, model: str, label: int) -> dict:
    return {"request_id": request_id, "model": model, "kind": "class", "class_label": label,
            "reason": "test: licence withdrawn"}


def slow_params(model: str) -> dict:
    params = project_params(model)
    params["policy"][model]["class"] = ["retrain"]
    params["unlearn"]["retrain"] = SLOW_RETRAIN
    return params


def versions_by_batch(mlflow_url: str, model: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in MlflowClient(mlflow_url).search_model_versions(f"name = '{model}'"):
        out.setdefault(v.tags.get("batch_id", "build"), []).append(v.version)
    return out


def test_custom_run_is_processed_by_a_worker_and_registered_on_the_mlflow_server(stack, tmp_path, tiny_model):
    model = "digits-rest"
    project = build_project(tmp_path / "p", model, tiny_model, stack.mlflow, project_params(model))

    run_id = stack.create_run({"requests": [class_request("rest-class-3", model, 3)]}, project)
    run = stack.wait(run_id)

    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["work_pool_name"] == "unlearn" and run["work_queue_name"] == "gpu"
    assert f"submitting flow run '{run_id}'" in stack.worker_logs()
    client = MlflowClient(stack.mlflow)  # read back from the server, not from a local store
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.version == "2"
    tags = champion.tags
    assert tags["lineage"] == "deletion-batch" and tags["base_version"] == "1"
    assert tags["request_ids"] == "rest-class-3" and tags["verdict"] == "pass"
    entry = Ledger(project / "data" / "ledger.sqlite").find("rest-class-3")[-1]
    assert entry.state == "registered" and entry.batch_id == tags["batch_id"]
    # the erasure scan searched the stack's folder (servers' databases, workers' TMPDIR) and the
    # MLflow server's artifact folder, not just named them
    scan = json.loads((project / "data" / "certificates" / entry.batch_id / "erasure-scan.json").read_text())
    searched = {loc["name"]: loc for loc in scan["locations"]}
    assert searched["team stack (server databases, logs, workers' temporary files)"]["files"] > 0
    assert searched["MLflow served artifacts (the stack's --artifacts-destination)"]["files"] > 0
    assert not [n for n in scan["not_scanned"] if "MLflow" in n["reason"]]
    # what a person sees: the version says what it is, declares its input, and the run links to it
    assert champion.description.startswith(f"batch {tags['batch_id']}: ") and "(promoted: " in champion.description
    with tracking(stack.mlflow), pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmp_path))  # MLflow downloads the MLmodel to a temp folder it keeps
        (images,) = mlflow.models.get_model_info(f"models:/{model}/2").signature.inputs.inputs
    assert images.shape == (-1, 1, 8, 8)
    artifacts = stack.http.post("/artifacts/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    by_key = {a["key"]: a for a in artifacts}
    assert {"deletion-certificate", "deletion-requests"} <= set(by_key)
    assert f"{stack.mlflow}/#/models/{model}/versions/2" in by_key[f"mlflow-{model}-version"]["data"]
    assert f"{stack.mlflow}/#/experiments/" in by_key[f"mlflow-{model}-run"]["data"]
    assert f"{stack.mlflow}/#/models/{model}/versions/2" in by_key["deletion-certificate"]["data"]


def test_deployment_schedule_parameters_and_limits_come_from_the_project(stack, team_project):
    import yaml

    params = yaml.safe_load((team_project / "params.yaml").read_text())["batch"]
    deployment = stack.deployment()
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == params["schedule_cron"]
    assert schedule["active"] is params["schedule_active"] is False
    assert deployment["entrypoint"] == "flows.deletion_batch.deletion_batch"
    form = deployment["parameter_openapi_schema"]["properties"]
    assert "requests" in form and "root" not in form  # the project comes from the worker, not the form
    request_form = deployment["parameter_openapi_schema"]["definitions"]["RequestForm"]["properties"]
    assert request_form["kind"]["enum"] == ["samples", "subject", "class", "concept"]
    assert all(request_form[f]["description"] for f in ("model", "class_label", "subject_id", "concept"))
    gpu = stack.http.get("/concurrency_limits/tag/gpu").raise_for_status().json()
    assert gpu["concurrency_limit"] == 1
    automations = stack.http.post("/automations/filter", json={}).raise_for_status().json()
    zombie = next(a for a in automations if "heartbeat" in a["name"])
    assert zombie["trigger"]["within"] == ZOMBIE_S and zombie["actions"][0]["state"] == "CRASHED"
    for name in ("build-train/on-demand", "build-register/on-demand", "build-llm/on-demand"):
        assert stack.deployment(name)["work_pool_name"] == "unlearn"


def test_two_workers_process_every_request_exactly_once(stack, tmp_path, tiny_model):
    model = "digits-pair"
    project = build_project(tmp_path / "p", model, tiny_model, stack.mlflow, project_params(model))
    requests = {f"pair-{label}": label for label in (1, 4, 7)}

    runs = [stack.create_run({"requests": [class_request(rid, model, label)]}, project)
            for rid, label in requests.items()]
    finished = [stack.wait(r) for r in runs]
    assert {r["state_type"] for r in finished} == {"COMPLETED"}
    logs = stack.worker_logs()
    workers = {line.split("'")[1] for line in logs.splitlines() for r in runs if f"submitting flow run '{r}'" in line}
    assert len(workers) == 2, f"both workers should have taken runs: {workers}"

    # A run that found another one's batch open ends Deferred, its request queued for the next run
    # (validated, with a ledger event saying so): follow-up runs drain them.
    ledger = Ledger(project / "data" / "ledger.sqlite")
    for run in finished:
        if run["state"]["name"] == "Deferred":
            assert "queued for the next run" in run["state"]["message"] or "another run" in run["state"]["message"]
    for _ in range(len(requests)):
        if not ledger.entries(state="validated") and not ledger.open_batches():
            break
        assert stack.wait(stack.create_run({"requests": []}, project))["state_type"] == "COMPLETED"
    entries = {rid: ledger.find(rid) for rid in requests}
    assert all(len(e) == 1 and e[0].state == "registered" for e in entries.values()), entries
    batches = {e[0].batch_id for e in entries.values()}
    by_batch = versions_by_batch(stack.mlflow, model)
    assert set(by_batch) == batches | {"build"}
    assert all(len(v) == 1 for v in by_batch.values()), by_batch  # one version per batch


def test_a_dead_worker_machine_leaves_a_crashed_run_and_the_next_run_resumes_the_batch(stack, tmp_path, tiny_model):
    model = "digits-crash"
    project = build_project(tmp_path / "p", model, tiny_model, stack.mlflow, slow_params(model))
    run_id = stack.create_run({"requests": [class_request("crash-class-5", model, 5)]}, project)
    stack.wait_task(run_id, "unlearn", {"RUNNING"})

    # the machine dies: both workers and every flow-run process they started, without a word
    killed = [pid for name in proc.recorded(stack.cfg.run_dir) if name.startswith("worker-")
              for pid in proc.stop(stack.cfg.run_dir, name, sig="kill")]
    assert len(killed) >= 3  # two workers and the flow-run process
    crashed = stack.wait(run_id, timeout=ZOMBIE_S + 120)
    assert crashed["state_type"] == "CRASHED" and "heartbeat" in crashed["state"]["message"]
    # what the killed run left behind (Prefect's per-run workspace) is in its worker's folder, not in /tmp
    assert list(stack.cfg.home.glob("worker-*/tmp/prefect-workspace-*"))
    ledger = Ledger(project / "data" / "ledger.sqlite")
    (open_batch,) = ledger.open_batches()

    restarted = run_stack("up", stack.env)  # brings back only what is missing: the workers
    assert restarted.returncode == 0, restarted.stderr
    assert stack.wait(stack.create_run({"requests": []}, project))["state_type"] == "COMPLETED"

    (entry,) = ledger.find("crash-class-5")
    assert entry.state == "registered" and entry.batch_id == open_batch
    assert ledger.batch(open_batch)["state"] == "done" and not ledger.open_batches()
    assert versions_by_batch(stack.mlflow, model) == {"build": ["1"], open_batch: ["2"]}


def test_the_register_step_rides_out_an_mlflow_server_restart(stack, tmp_path, tiny_model):
    model = "digits-restart"
    project = build_project(tmp_path / "p", model, tiny_model, stack.mlflow, slow_params(model))
    run_id = stack.create_run({"requests": [class_request("restart-class-6", model, 6)]}, project)
    stack.wait_task(run_id, "unlearn", {"RUNNING"})

    proc.stop(stack.cfg.run_dir, "mlflow")
    assert not proc.http_ok(stack.mlflow + "/health")
    register = stack.wait_task(run_id, "register-candidate", {"RUNNING", "AWAITINGRETRY", "SCHEDULED", "PENDING"})
    down_since = time.monotonic()
    time.sleep(3)  # the step is now talking to a server that is not there
    restarted = run_stack("up", stack.env)
    assert restarted.returncode == 0, restarted.stderr
    assert time.monotonic() - down_since > 3

    run = stack.wait(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]
    (entry,) = Ledger(project / "data" / "ledger.sqlite").find("restart-class-6")
    assert entry.state == "registered"
    assert versions_by_batch(stack.mlflow, model) == {"build": ["1"], entry.batch_id: ["2"]}
    assert MlflowClient(stack.mlflow).get_model_version_by_alias(model, "champion").version == "2"
    final = next(t for t in stack.task_runs(run_id) if t["id"] == register["id"])
    assert final["state_type"] == "COMPLETED"
