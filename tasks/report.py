"""What a deletion_batch run tells a person in the Prefect UI: its final state, and its artifacts.

- The state: Completed with a one-line message (the batch and its outcome), or Completed named
  `Deferred` when the run could not take its requests — another run is processing the open batch,
  or the run finished an older batch first — which then wait, queued, for the next run (each gets a
  ledger event saying so; their state stays `validated`/`approved`, which the next claim takes).
- The artifacts: the certificate (Markdown), a table of the run's requests and their outcomes,
  and links to each new MLflow model version and its run (only when MLflow is a server: a local
  store has no URL, and the certificate artifact says so).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlflow import MlflowClient
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.states import Completed, State

from tasks.batch import ModelReport
from tasks.certificate import WAITING, outcome_rows
from tasks.registry import tracking_uri
from unlearn_ops.ledger import Ledger

DEFERRED = "Deferred"


# ------------------------------------------------------------------------------ queued requests
def queue_waiting(ledger: Ledger, intake: list[dict[str, Any]], batches: list[dict[str, Any]]) -> list[str]:
    """This run's accepted requests that none of its batches took: each gets a ledger event
    "queued for the next run" with the reason; returns their IDs."""
    busy = [b["batch_id"] for b in batches if b.get("state") == "busy"]
    ran = [b["batch_id"] for b in batches if b.get("batch_id") and b.get("state") != "busy"]
    why = (f"batch {busy[0]} is being processed by another run" if busy else
           f"this run finished batch {', '.join(ran)}, opened before they arrived" if ran else "no batch ran")
    queued = []
    for item in intake:
        for entry in ledger.find(item["request_id"]):
            if entry.state in WAITING:
                ledger.note(entry.ledger_id, f"queued for the next run: {why}")
                queued.append(entry.request_id)
    return queued


def final_state(result: dict[str, Any]) -> State:
    """Completed with a message; `Deferred` when this run's requests wait for the next run or the
    open batch belongs to another run. The flow's return value (the call's result) is `result`."""
    busy = [b["batch_id"] for b in result["batches"] if b.get("state") == "busy"]
    done = [f"batch {b['batch_id']}: {(b.get('certificate') or {}).get('outcome', b.get('state'))}"
            for b in result["batches"] if b.get("state") != "busy"]
    parts = done or ([] if busy else ["no batch to run: no validated or approved requests waiting"])
    if busy:
        parts.append(f"batch {busy[0]} is being processed by another run: this run did nothing to it")
    if result["queued"]:
        parts.append(f"{len(result['queued'])} request(s) queued for the next run: {', '.join(result['queued'])}")
    if result["awaiting_approval"]:
        parts.append(f"{len(result['awaiting_approval'])} await a person's approval")
    message = "; ".join(parts)
    return Completed(message=message, data=result, name=DEFERRED if busy or result["queued"] else "Completed")


# ------------------------------------------------------------------------------ artifacts
def mlflow_links(uri: str, model: str, version: str, run_id: str | None, experiment_id: str | None) -> dict[str, str]:
    """The MLflow UI's pages of a model version and of its run, when `uri` is a server (http[s]);
    {} for a local store (sqlite, file), which has no URL."""
    if not uri.startswith(("http://", "https://")):
        return {}
    base = uri.rstrip("/")
    links = {"version": f"{base}/#/models/{quote(model, safe='')}/versions/{version}"}
    if run_id and experiment_id:
        links["run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return links


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys take lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def registry_section(models: list[ModelReport]) -> tuple[str, list[tuple[str, str, str]]]:
    """The certificate artifact's registry section and the links it names: (key, URL, text)."""
    uri, client = tracking_uri(), MlflowClient(tracking_uri())
    lines, links = ["", "## In the MLflow registry", ""], []
    for m in (m for m in models if m.candidate):
        mv = client.get_model_version(m.model, m.candidate)
        experiment = client.get_run(mv.run_id).info.experiment_id if mv.run_id else None
        found = mlflow_links(uri, m.model, m.candidate, mv.run_id, experiment)
        alias = "champion" if m.champion_after == m.candidate else "candidate"
        if found:
            lines.append(f"- {m.model} version {m.candidate} ({alias}): [model version]({found['version']})"
                         + (f", [run]({found['run']})" if "run" in found else ""))
            links += [(artifact_key("mlflow", m.model, what), url, f"{m.model} v{m.candidate}: MLflow {what}")
                      for what, url in found.items()]
        else:
            lines.append(f"- {m.model} version {m.candidate} ({alias}), run {mv.run_id}: no link, the MLflow store "
                         f"is local ({uri}); open it with `make ui` → Model training → Model registry")
    return ("\n".join(lines) if len(lines) > 3 else ""), links


def publish(ledger: Ledger, result: dict[str, Any]) -> None:
    """The run's artifacts: a table of its requests and their outcomes; per batch with a
    certificate, the certificate in Markdown (with its registry section) and the MLflow links."""
    rows, seen = [], set()
    for b in result["batches"] or [{"batch_id": None}]:
        models = [ModelReport.from_dict(m) for m in b.get("models", [])]
        for row in outcome_rows(ledger, b["batch_id"] if b.get("state") != "busy" else None, result["intake"], models):
            if (row["request"], row["state"]) not in seen:
                seen.add((row["request"], row["state"]))
                rows.append(row)
    create_table_artifact(rows, key="deletion-requests",
                          description="This run's requests: state, method path, gates, champion, reason")
    for b in result["batches"]:
        cert = b.get("certificate")
        if not isinstance(cert, dict) or not cert.get("markdown") or not Path(cert["markdown"]).is_file():
            continue
        section, links = registry_section([ModelReport.from_dict(m) for m in b.get("models", [])])
        create_markdown_artifact(Path(cert["markdown"]).read_text() + section, key="deletion-certificate",
                                 description=f"Certificate of batch {b['batch_id']}: {cert.get('outcome')}")
        for key, url, text in links:
            create_link_artifact(url, link_text=text, key=key, description=f"batch {b['batch_id']}")
