"""Intake: every document ends in the ledger, accepted or rejected with a specific reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.intake import intake_documents
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL, PARAMS
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store
from unlearn_ops.ledger import Ledger

REGISTERED = {MODEL}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("intake")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    store = build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    store.purge(["digits/train/000005"])
    store.write_manifest([i for i in store.active_ids() if i != "digits/train/000005"])
    return Workspace.at(root)


def submit(ws, doc, registered=REGISTERED):
    ledger = Ledger(ws.root / "ledger.sqlite")
    return intake_documents(ws, ledger, [(doc, "test")], lambda m: m in registered)[0], ledger


def req(**kw):
    return {"model": MODEL, **kw}


@pytest.mark.parametrize("doc, reason", [
    (req(kind="samples", sample_ids=["digits/train/999999"]), "unknown sample IDs"),
    (req(kind="samples", sample_ids=["digits/train/000005"]), "already forgotten"),
    (req(kind="samples", sample_ids=["digits/test/000001"]), "never trained on"),
    (req(kind="subject", subject_id="subj-99999"), "unknown data subject"),
    (req(kind="class", class_label=42), "out of range"),
    (req(kind="class", class_label="Giraffe"), "unknown class"),
    ({"model": "nope", "kind": "class", "class_label": 1}, "not served by this pipeline"),
    (req(kind="class", class_label=1, subject_id="subj-00001"), "takes only 'class_label'"),
    (req(kind="samples"), "needs 'sample_ids'"),
    (req(kind="concept"), "needs 'concept'"),
    (req(kind="concept", concept="  "), "'concept' must not be empty"),
    (req(kind="concept", concept="enigma", class_label=1), "takes only 'concept'"),
    (req(kind="everything"), "kind"),
    ("{not json", "not valid JSON or YAML"),
    ("[1, 2]", "must be a JSON/YAML object"),
    (req(kind="class", class_label=1, colour="red"), "colour"),
])
def test_each_rejection_has_a_specific_reason(ws, doc, reason):
    checked, ledger = submit(ws, doc)
    assert checked.entry.state == "rejected"
    assert reason in checked.reason
    assert ledger.get(checked.entry.ledger_id).reason == checked.reason


def test_kind_outside_the_models_policy_is_rejected(tmp_path):
    """A model serves the request kinds its policy lists (a language model has no `class` chain)."""
    import yaml

    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    del params["policy"][MODEL]["class"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    build_store(load_digits(), tmp_path / "data" / "store" / "digits", max_subject_size=10)
    checked, _ = submit(Workspace.at(tmp_path), req(kind="class", class_label=1))
    assert checked.entry.state == "rejected"
    assert checked.reason == f"model {MODEL!r} does not serve 'class' requests (policy.{MODEL} has no `class` chain)"


def test_unregistered_model_is_rejected(ws):
    checked, _ = submit(ws, req(kind="class", class_label=1), registered=set())
    assert "not registered" in checked.reason


def test_duplicate_request_id_is_rejected_but_kept(ws):
    first, ledger = submit(ws, req(request_id="dup-1", kind="class", class_label=2))
    second, _ = submit(ws, req(request_id="dup-1", kind="class", class_label=2))
    assert first.entry.state == "validated"
    assert second.entry.state == "rejected" and "duplicate request_id" in second.reason
    assert len(ledger.find("dup-1")) == 2


def test_accepted_request_resolves_to_training_ids(ws):
    checked, ledger = submit(ws, req(kind="subject", subject_id="subj-00003"))
    assert checked.reason is None and checked.entry.state == "validated"
    store = ws.store_for(MODEL)
    assert set(checked.sample_ids) == set(store.subject_ids("subj-00003")) & set(store.active_ids())
    states = [e["state"] for e in ledger.events(checked.entry.request_id)]
    assert states == ["received", "validated"]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
                           max_leaves=8)
documents = st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["request_id", "model", "kind", "sample_ids", "subject_id", "class_label",
                                     "requester", "reason", "received_at", "extra"]),
                    json_values | st.sampled_from([MODEL, "samples", "subject", "class", "subj-00001",
                                                   ["digits/train/000001"], 3, "2026-01-01T00:00:00Z"]),
                    max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
@example(doc={"request_id": "\U00010000"})     # json.dumps escapes it as a surrogate pair YAML decodes alone
@example(doc='{"request_id": "\\ud800"}')       # a lone surrogate
def test_intake_never_crashes_and_never_loses_a_document(ws, doc):
    ledger = Ledger(ws.root / "ledger.sqlite")
    before = len(ledger.entries())
    checked = intake_documents(ws, ledger, [(doc if isinstance(doc, str) else json.dumps(doc), "fuzz")],
                               lambda m: m in REGISTERED)[0]
    assert len(ledger.entries()) == before + 1
    assert checked.entry.state in ("validated", "rejected")
    assert (checked.entry.state == "rejected") == bool(checked.reason)
