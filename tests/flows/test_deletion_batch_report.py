"""What a person sees of a deletion_batch run: the typed `requests` form (the flow's parameter
schema, from which the Prefect UI draws it), a run that cannot take its requests ending
`Deferred` with them queued, and the artifacts a batch publishes (read back from the Prefect API)."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.utilities.callables import parameter_schema

from flows import deletion_batch as db
from tasks.batch import batch_lock, claim_new
from tasks.intake import intake_task
from tasks.report import DEFERRED, mlflow_links
from tasks.request_form import RequestForm, documents
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL
from unlearn_ops.ledger import Ledger

FIRST = {"request_id": "r-first", "model": MODEL, "kind": "subject", "subject_id": "subj-00007"}
LATE = {"request_id": "r-late", "model": MODEL, "kind": "subject", "subject_id": "subj-00011"}


def artifacts(state) -> dict[str, list]:
    """The flow run's artifacts by type, read back from the Prefect API."""
    run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=run)
    out: dict[str, list] = {}
    for a in found:
        out.setdefault(a.type, []).append(a)
    return out


def test_the_requests_parameter_is_a_typed_form_and_root_is_not_offered():
    schema = parameter_schema(db.deletion_batch).model_dump_for_openapi()
    assert set(schema["properties"]) == {"requests", "batch_id", "wait_for_approval"}  # no `root`
    requests = schema["properties"]["requests"]
    assert requests["type"] == "array" and "inbox" in requests["description"]
    form = schema["definitions"][requests["items"]["$ref"].rsplit("/", 1)[-1]]
    assert form["required"] == ["kind", "model"] and form["additionalProperties"] is False
    fields = form["properties"]
    assert [f["position"] for f in fields.values()] == list(range(len(fields)))  # the form's order, kept by any store
    assert list(fields)[:3] == ["kind", "model", "class_label"]
    assert fields["kind"]["enum"] == ["samples", "subject", "class", "concept"]
    for name in ("kind", "model", "class_label", "subject_id", "concept", "sample_ids", "request_id"):
        assert fields[name]["description"], name
    assert "class_label" in fields["kind"]["description"] and "Dress" in fields["class_label"]["description"]
    assert not any("default" in fields[f] for f in ("subject_id", "concept", "sample_ids"))  # no null to post
    assert {"type": "integer"} in fields["class_label"]["anyOf"] and {"type": "string"} in fields["class_label"]["anyOf"]


def test_a_form_becomes_the_document_the_intake_checks_and_a_plain_dict_passes_as_it_is():
    form = RequestForm(kind="class", model=MODEL, class_label="Dress", subject_id="", reason="licence withdrawn")
    assert documents([form, FIRST]) == [{"kind": "class", "model": MODEL, "class_label": "Dress",
                                         "reason": "licence withdrawn"}, FIRST]
    assert documents(None) == []


def test_mlflow_links_only_for_a_server():
    links = mlflow_links("http://127.0.0.1:5000/", "fmnist classifier", "3", "abc", "7")
    assert links == {"version": "http://127.0.0.1:5000/#/models/fmnist%20classifier/versions/3",
                     "run": "http://127.0.0.1:5000/#/experiments/7/runs/abc"}
    assert mlflow_links("sqlite:///mlflow.db", "m", "3", "abc", "7") == {}


def test_a_run_that_finds_the_batch_taken_ends_deferred_and_queues_its_requests_then_the_batch_publishes(workspace):
    ws = Workspace.at(workspace)
    ledger = Ledger(ws.ledger_path)
    intake_task.fn(str(ws.root), [FIRST])
    open_batch = claim_new(ledger)

    with batch_lock(ws, open_batch) as mine:  # another run is processing the open batch
        assert mine
        state = db.deletion_batch(requests=[LATE], root=str(workspace), return_state=True)

    assert state.is_completed() and state.name == DEFERRED
    assert f"batch {open_batch} is being processed by another run" in state.message
    assert "1 request(s) queued for the next run: r-late" in state.message
    result = state.result()
    assert result["queued"] == ["r-late"] and result["state"] == "busy"
    (late,) = ledger.find("r-late")
    assert late.state == "validated" and late.batch_id is None  # the next run's claim takes it
    assert ledger.events("r-late")[-1]["reason"] == (f"queued for the next run: batch {open_batch} is being "
                                                     "processed by another run")
    assert ledger.batch(open_batch)["state"] == "open" and ledger.batch(open_batch)["progress"] == {}
    (table,) = artifacts(state)["table"]
    assert '"r-late"' in table.data and "queued for the next run" in table.data

    # the lock is free: the next run finishes the open batch and publishes it (r-late, claimed after
    # that batch, waits for the run after: it is not this run's)
    state = db.deletion_batch(root=str(workspace), return_state=True)
    assert state.name == "Completed" and state.message == f"batch {open_batch}: REGISTERED"
    assert ledger.find("r-first")[0].state == "registered"
    found = artifacts(state)
    (certificate,) = found["markdown"]
    assert certificate.key == "deletion-certificate" and open_batch in certificate.data
    assert "r-first" in certificate.data and "the MLflow store is local" in certificate.data  # no URL to link
    assert "link" not in found
    (table,) = found["table"]
    assert '"registered"' in table.data and '"r-first"' in table.data
