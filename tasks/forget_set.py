"""A batch's forget set: extracted from its requests before unlearning (the record of IDs and
content hashes, never data), and taken out of the active store once the new champion is in
place. The flow versions both with DVC (tasks/versioning.py) right after."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task

from tasks.batch import ForgetIds, ForgetSet, ModelWork
from tasks.intake import intake_limits, validate_pending
from tasks.registry import is_registered
from tasks.workspace import Workspace
from unlearn_ops.ledger import Ledger
from unlearn_ops.requests import parse_request
from unlearn_ops.utils import atomic_write_json, canonical_json, sha256_bytes


@dataclass
class _Requests:
    """The valid requests of one model, gathered."""

    request_ids: list[str] = field(default_factory=list)
    ledger_ids: list[int] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    classes: set[int] = field(default_factory=set)
    sample_ids: set[str] = field(default_factory=set)
    item_ids: set[str] = field(default_factory=set)


def relative(ws: Workspace, path: str | Path) -> str:
    """`path` as DVC takes it: relative to the workspace root."""
    return str(Path(path).relative_to(ws.root))


@task(name="extract-forget-set", retries=2, retry_delay_seconds=2)
def extract_task(root: str, batch_id: str) -> ForgetSet:
    """Re-validate the batch's requests against the current data (another batch may have forgotten
    the same samples), then write the forget-set record: IDs, content hashes, request IDs."""
    ws = Workspace.at(root)
    ledger = Ledger(ws.ledger_path)
    entries = [e for e in ledger.entries(batch_id=batch_id) if e.state == "in_batch"]
    limits = intake_limits(ws)  # the limits the requests were accepted under
    pending = [(e, parse_request(e.document, limits)) for e in entries]
    checked = validate_pending(ws, ledger, pending, is_registered)
    for c in checked:
        if c.reason:
            ledger.transition(c.entry.ledger_id, "rejected", f"at batch time: {c.reason}", batch_id)
    by_model: dict[str, _Requests] = {}
    for c in (c for c in checked if not c.reason):
        m = by_model.setdefault(c.request.model, _Requests())
        m.request_ids.append(c.request.request_id)
        m.ledger_ids.append(c.entry.ledger_id)
        m.kinds.add(c.request.kind)
        m.sample_ids.update(c.sample_ids)
        if c.request.kind == "class":
            m.classes.add(ws.store_for(c.request.model).class_index(c.request.class_label))
        else:
            m.item_ids.update(c.sample_ids)
    record: dict[str, Any] = {"batch_id": batch_id, "created_at": datetime.now(UTC).isoformat(),
                              "models": {}, "applied": {}}
    works = []
    for model, m in by_model.items():
        store = ws.store_for(model)
        ids = sorted(m.sample_ids)
        hashes = store.hashes(ids)
        digest = sha256_bytes(canonical_json(list(zip(ids, hashes, strict=True))).encode())
        record["models"][model] = {"dataset": store.name, "request_ids": m.request_ids, "kinds": sorted(m.kinds),
                                   "classes": sorted(m.classes), "sample_ids": ids, "sha256": hashes,
                                   "forget_set_sha256": digest}
        record["applied"][model] = False
        work = ws.runs / batch_id / model
        atomic_write_json(work / ForgetIds.FILE, ForgetIds(ids, sorted(m.item_ids)).to_dict(), indent=None)
        works.append(ModelWork(model=model, count=len(ids), sha256=digest, kinds=sorted(m.kinds),
                               classes=sorted(m.classes), ledger_ids=m.ledger_ids, request_ids=m.request_ids,
                               work=str(work)))
    path = ws.forget_sets / f"{batch_id}.json"
    atomic_write_json(path, record)
    return ForgetSet(record=str(path), models=works)


@task(name="apply-deletion", retries=2, retry_delay_seconds=2)
def apply_deletion_task(root: str, model: str, work: str, record_path: str) -> dict[str, str]:
    """Remove the forget set from the active manifest, purge its bytes and mark the record applied.
    Only ever runs after the new champion is in place. Returns what was purged and the paths
    to version (`record`, `store`)."""
    ws = Workspace.at(root)
    store = ws.store_for(model)
    ids = ForgetIds.load(work).ids
    drop = set(ids)
    store.write_manifest([i for i in store.active_ids() if i not in drop])
    purged = store.purge(ids)
    record = json.loads(Path(record_path).read_text())
    record["applied"][model] = True
    atomic_write_json(record_path, record)
    return {"purged": str(purged), "record": relative(ws, record_path), "store": relative(ws, store.root)}
