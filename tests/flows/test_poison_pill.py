"""A hostile document in the inbox is rejected on its own: the batch completes the good requests."""

from __future__ import annotations

import json

from flows import deletion_batch as db
from tasks.workspace import Workspace
from tests.flows.conftest import MODEL
from unlearn_ops.ledger import Ledger

DEEP = '{"request_id": "pill-deep", "x": ' + "[" * 15_000 + "]" * 15_000 + "}"  # the 30 KB document
LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def test_a_batch_with_hostile_inbox_files_completes_the_good_request(workspace):
    ws = Workspace.at(workspace)
    (ws.inbox / "00-deep.json").write_text(DEEP)
    (ws.inbox / "01-good.json").write_text(json.dumps({"request_id": "pill-good", "model": MODEL, "kind": "subject",
                                                        "subject_id": "subj-00007"}))
    (ws.inbox / "02-laughs.yaml").write_text(LAUGHS)
    (ws.inbox / "03-utf16.json").write_bytes(b"\xff\xfe" + b"{\x00\xd8")  # truncated UTF-16

    result = db.deletion_batch(root=str(workspace))

    assert result["state"] == "done", result
    ledger = Ledger(ws.ledger_path)
    states = {e.request_id: (e.state, e.reason) for e in ledger.entries()}
    assert states["pill-good"][0] == "registered"
    assert states["invalid-pill-deep"] == ("rejected", "nested deeper than 8 levels")
    assert len(ledger.entries()) == 4 and sum(s == "rejected" for s, _ in states.values()) == 3
    assert not list(ws.inbox.iterdir())  # every file filed away, none left to poison the next batch
    reasons = sorted(p.read_text() for p in ws.quarantine.glob("*.reason.txt"))
    assert len(reasons) == 3 and all("rejected: " in r for r in reasons)
    assert any("more than 16 YAML aliases" in r for r in reasons)
    assert any("not UTF-16 text" in r for r in reasons)
