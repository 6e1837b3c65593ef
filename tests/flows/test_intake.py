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
from unlearn_ops.request_parsing import IntakeLimits

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
@example(doc="[" * 3000 + "]" * 3000)            # nested deeper than any parser's recursion
def test_intake_never_crashes_and_never_loses_a_document(ws, doc):
    ledger = Ledger(ws.root / "ledger.sqlite")
    before = len(ledger.entries())
    checked = intake_documents(ws, ledger, [(doc if isinstance(doc, str) else json.dumps(doc), "fuzz")],
                               lambda m: m in REGISTERED)[0]
    assert len(ledger.entries()) == before + 1
    assert checked.entry.state in ("validated", "rejected")
    assert (checked.entry.state == "rejected") == bool(checked.reason)


DEEP = '{"request_id": "deep-1", "x": ' + "[" * 15_000 + "]" * 15_000 + "}"  # the 30 KB poison pill


def test_hostile_documents_are_rejected_one_by_one_and_the_others_recorded(ws):
    import hashlib

    deep_data: list = []
    for _ in range(5000):
        deep_data = [deep_data]
    docs = [req(request_id="iso-1", kind="subject", subject_id="subj-00004"), DEEP, b"\xff\xfe\x00",
            {"request_id": "deep-2", "x": deep_data}, "a: &a [*a]", "a: !!python/object/apply:os.system ['true']",
            json.dumps(req(request_id="iso-2", kind="class", class_label=4)).encode("utf-16")]
    ledger = Ledger(ws.root / "ledger.sqlite")
    before = len(ledger.entries())
    checked = intake_documents(ws, ledger, [(d, f"doc{i}") for i, d in enumerate(docs)], lambda m: m in REGISTERED)
    assert len(ledger.entries()) == before + len(docs)
    assert [c.entry.state for c in checked] == ["validated"] + ["rejected"] * 5 + ["validated"]
    assert "nested deeper than 8 levels" in checked[1].reason and "nested deeper" in checked[3].reason
    assert "refers to a node that contains it" in checked[4].reason and "YAML tag" in checked[5].reason
    # a rejected document is kept bounded: at most keep_bytes of it, with its size and sha256
    assert checked[1].entry.request_id.startswith("invalid-")
    kept = json.loads(ledger.get(checked[1].entry.ledger_id).document)["rejected_document"]
    assert kept["size_bytes"] == len(DEEP) and kept["sha256"] == hashlib.sha256(DEEP.encode()).hexdigest()
    assert len(kept["text"]) == kept["kept_bytes"] == 4096


def test_an_unforeseen_exception_rejects_only_its_document(ws, monkeypatch):
    import tasks.intake as intake

    real = intake.parse_document

    def flaky(document, limits):
        if document == "boom":
            raise RuntimeError("a parser bug")
        return real(document, limits)

    monkeypatch.setattr(intake, "parse_document", flaky)
    real_resolve = intake.resolve
    monkeypatch.setattr(intake, "resolve", lambda r, store: (_ for _ in ()).throw(KeyError("resolver bug"))
                        if r.request_id == "unres-1" else real_resolve(r, store))
    docs = ["boom", req(request_id="unres-1", kind="class", class_label=5), req(request_id="fine-1", kind="class", class_label=6)]
    ledger = Ledger(ws.root / "ledger.sqlite")
    checked = intake_documents(ws, ledger, [(d, "test") for d in docs], lambda m: m in REGISTERED)
    assert checked[0].reason == "could not be read (RuntimeError: 'a parser bug')"
    assert checked[1].reason == "its target could not be resolved (KeyError: \"'resolver bug'\")"
    assert checked[2].entry.state == "validated"


def test_an_unreadable_file_is_recorded_as_rejected(ws, tmp_path):
    import os

    from tasks.intake import read_file

    os.mkfifo(tmp_path / "pipe.json")
    ledger = Ledger(ws.root / "ledger.sqlite")
    (checked,) = intake_documents(ws, ledger, [(read_file(tmp_path / "pipe.json", IntakeLimits()), "cli:pipe.json")],
                                  lambda m: m in REGISTERED)
    assert checked.entry.state == "rejected" and checked.reason == "pipe.json is not a regular file"


def test_odd_inbox_file_names_are_recorded_and_filed(ws):
    import os

    from tasks.intake import intake_inbox

    ws.inbox.mkdir(parents=True, exist_ok=True)
    names = [os.fsdecode(b"req-\xff\xfe\x1b[31m.json"), "n" * 245 + ".json"]
    for k, name in enumerate(names):
        (ws.inbox / name).write_text(json.dumps(req(request_id=f"name-{k}", kind="class", class_label=7)))
    ledger = Ledger(ws.root / "ledger.sqlite")
    checked = intake_inbox(ws, ledger, None, lambda m: m in REGISTERED)
    assert [c.entry.state for c in checked] == ["validated", "validated"]
    assert not list(ws.inbox.iterdir())
    sources = {ledger.get(c.entry.ledger_id).source for c in checked}
    assert "inbox:req-\\xff\\xfe\\x1b[31m.json" in sources and all(len(s) <= 206 for s in sources)
