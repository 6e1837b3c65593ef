"""Request intake: schema (pydantic) + facts checked with Great Expectations → ledger.

Every document ends in the ledger: accepted ones as `validated`, the rest as `rejected` with a
specific reason. Each document is read on its own, within `IntakeLimits` (params.yaml `intake:`),
and *any* exception while reading it rejects that document only: one hostile file never stops
the others, nor the batch. Inbox files move to `processed/`, or to `quarantine/` with a
`.reason.txt` beside.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.validation import run_suite
from tasks.workspace import Workspace
from unlearn_ops.ledger import Entry, Ledger
from unlearn_ops.request_parsing import Document, IntakeLimits, RawDocument, RequestError, kept_text, quote
from unlearn_ops.requests import DeletionRequest, claimed_id, parse_document, resolve, to_request

log = logging.getLogger(__name__)
REQUEST_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class Checked:
    entry: Entry
    request: DeletionRequest | None
    reason: str | None          # None = accepted
    sample_ids: tuple[str, ...] = ()


def intake_limits(ws: Workspace) -> IntakeLimits:
    return IntakeLimits.from_params(ws.params.get("intake"))


def unexpected(e: BaseException, what: str) -> str:
    """The reason for an exception no check foresaw: its type and (bounded) message."""
    return f"{what} ({type(e).__name__}: {quote(str(e), 120)})"


@dataclass(frozen=True)
class Unreadable:
    """A file that could not even be read (not a regular file, no permission): rejected with `reason`."""

    reason: str


def record(ledger: Ledger, document: Document | Unreadable, source: str,
           limits: IntakeLimits | None = None) -> tuple[Entry, DeletionRequest | None]:
    """Parse and store a document as `received`, or as `rejected` with its reason: whatever the
    document holds, this returns a ledger row (only a failing ledger itself raises)."""
    limits = limits or IntakeLimits()
    if isinstance(document, Unreadable):
        return _reject(ledger, b"", source, document.reason, None, limits), None
    data = None
    try:
        data = parse_document(document, limits)
        req = to_request(data)
    except RequestError as e:
        return _reject(ledger, document, source, str(e), data, limits), None
    except Exception as e:  # noqa: BLE001 (no document may stop the intake: it is rejected, and says why)
        return _reject(ledger, document, source, unexpected(e, "could not be read"), data, limits), None
    entry = ledger.receive(req.request_id, json.dumps(req.to_json()), source, model=req.model, kind=req.kind,
                           received_at=req.received_at.isoformat())
    return entry, (req if entry.state == "received" else None)


# `"request_id": "x"` (JSON) or `request_id: x` (YAML) in a document too broken to parse
_CLAIMED = re.compile(r"""(?m)^[\s{,]*["']?request_id["']?\s*:\s*["']?([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?=["',}]|[ \t]*$)""")


def _claimed_in_text(text: str) -> str | None:
    m = _CLAIMED.search(text)
    return m.group(1) if m else None


def _reject(ledger: Ledger, document: Document, source: str, reason: str, data: Any,
            limits: IntakeLimits) -> Entry:
    """A rejected row: under `invalid-<claimed id>` when the document claims a well-formed one (so
    the sender can find it; never the live ID, which a corrected resubmission may use), keeping
    a bounded excerpt of the document with its size and sha256."""
    try:
        kept = kept_text(document, limits)
    except Exception as e:  # noqa: BLE001
        kept = json.dumps({"rejected_document": {"unkept": unexpected(e, "could not be kept")}})
    rid = claimed_id(data) or _claimed_in_text(json.loads(kept)["rejected_document"].get("text", ""))
    entry = ledger.receive(f"invalid-{rid}" if rid else None, kept, source)
    return ledger.transition(entry.ledger_id, "rejected", reason)


def facts(ws: Workspace, pending: list[tuple[Entry, DeletionRequest]], is_registered: Callable[[str], bool]) -> pd.DataFrame:
    """One row per request with the facts the expectations read (and the reason behind each)."""
    rows, stores, registered = [], {}, {}
    for entry, req in pending:
        policy = (ws.params.get("policy") or {}).get(req.model)
        served = req.model in ws.served_models() and policy is not None
        row: dict[str, Any] = {"ledger_id": entry.ledger_id, "request_id": req.request_id, "model": req.model,
                               "kind": req.kind, "model_served": served,
                               # e.g. a language model has no class deletions: its policy lists item kinds only
                               "kind_served": not served or req.kind in (policy or {}),
                               "target_ok": False,
                               "target_reason": "", "n_samples": 0, "sample_ids": []}
        if req.model not in registered:
            registered[req.model] = is_registered(req.model)
        row["model_registered"] = registered[req.model]
        if row["model_served"]:
            store = stores.setdefault(req.model, ws.store_for(req.model))  # a broken store is no request's fault
            try:
                ids = resolve(req, store)
                row.update(target_ok=True, n_samples=len(ids), sample_ids=ids)
            except RequestError as e:
                row["target_reason"] = str(e)
            except Exception as e:  # noqa: BLE001 (one request's target must not stop the others)
                row["target_reason"] = unexpected(e, "its target could not be resolved")
        rows.append(row)
    return pd.DataFrame(rows)


# expectation column → reason given to each request that fails it
REASONS = {
    "model_served": lambda r: f"model {r.model!r} is not served by this pipeline (needs `models.{r.model}` and `policy.{r.model}` in params.yaml)",
    "kind_served": lambda r: f"model {r.model!r} does not serve {r.kind!r} requests (policy.{r.model} has no `{r.kind}` chain)",
    "model_registered": lambda r: f"model {r.model!r} is not registered in the MLflow registry",
    "target_ok": lambda r: r.target_reason,
    "request_id": lambda r: f"duplicate request_id {r.request_id!r} in this batch",
}


def check_facts(df: pd.DataFrame) -> dict[int, str]:
    """Run the request suite with GX; returns ledger_id → reason for every failing request."""
    import great_expectations.expectations as gxe

    if df.empty:
        return {}
    frame = df.drop(columns=["sample_ids"]).reset_index(drop=True)
    report = run_suite("requests", frame, [
        gxe.ExpectColumnValuesToBeInSet(column="model_served", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="kind_served", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="model_registered", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="target_ok", value_set=[True]),
        gxe.ExpectColumnValuesToBeUnique(column="request_id"),
    ], complete=True)
    reasons: dict[int, list[str]] = {}
    for failure in report["failures"]:
        column = failure["kwargs"]["column"]
        for i in failure["unexpected_index_list"]:
            row = frame.iloc[int(i)]
            reasons.setdefault(int(row.ledger_id), []).append(REASONS[column](row))
    # a request whose model is unknown fails target_ok with an empty reason: keep the real one only
    return {k: "; ".join(r for r in v if r) for k, v in reasons.items()}


def validate_pending(ws: Workspace, ledger: Ledger, pending: list[tuple[Entry, DeletionRequest]],
                     is_registered: Callable[[str], bool]) -> list[Checked]:
    df = facts(ws, pending, is_registered)
    rejected = check_facts(df)
    out = []
    for (entry, req), (_, row) in zip(pending, df.iterrows(), strict=True):
        reason = rejected.get(entry.ledger_id)
        if entry.state == "received":
            entry = ledger.transition(entry.ledger_id, "rejected" if reason else "validated", reason)
        out.append(Checked(entry, req, reason, tuple(row.sample_ids) if not reason else ()))
    return out


def intake_documents(ws: Workspace, ledger: Ledger, documents: list[tuple[Document | Unreadable, str]],
                     is_registered: Callable[[str], bool]) -> list[Checked]:
    """Record and validate documents given as (document, source) pairs: one result per document."""
    limits = intake_limits(ws)
    recorded = [record(ledger, doc, source, limits) for doc, source in documents]
    pending = [(e, r) for e, r in recorded if r is not None]
    checked = {c.entry.ledger_id: c for c in validate_pending(ws, ledger, pending, is_registered)}
    return [checked.get(e.ledger_id) or Checked(e, None, e.reason) for e, _ in recorded]


def read_file(path: Path, limits: IntakeLimits) -> RawDocument | Unreadable:
    """A request file's bytes (at most `max_bytes + 1`, with the size and sha256 of all)."""
    try:
        return RawDocument.read(path, limits)
    except RequestError as e:
        return Unreadable(str(e))
    except OSError as e:
        return Unreadable(unexpected(e, "could not be read"))


def file_away(ws: Workspace, path: Path, checked: Checked, move: bool = True,
              limits: IntakeLimits | None = None) -> Path | None:
    """Move (or copy: at most `max_bytes + 1` of it) a request file to processed/ or quarantine/
    (+ reason file). None when the file system refuses: logged, the other files go on."""
    target_dir = ws.quarantine if checked.reason else ws.processed
    name = path.name if len(os.fsencode(path.name)) <= 200 else (  # the prefix must not push it past 255 bytes
        os.fsdecode(os.fsencode(path.stem)[:160]) + "_" + path.suffix[:20])
    target = target_dir / f"{checked.entry.ledger_id:06d}-{name}"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        if move:
            shutil.move(str(path), str(target))
        elif path.is_file():  # never open a FIFO or device: it may block or never end
            with path.open("rb") as src, target.open("wb") as dst:
                dst.write(src.read((limits or IntakeLimits()).max_bytes + 1))
        if checked.reason:
            target.with_name(target.name + ".reason.txt").write_text(
                f"request {checked.entry.request_id} rejected: {checked.reason}\n")
    except OSError as e:
        log.error("could not file away %s: %s", path, e)
        return None
    return target


def source(channel: str, path: Path) -> str:
    """`inbox:<file name>` as the ledger can store and a terminal can show it (a name need not be UTF-8
    and may hold escape sequences), at most 200 characters."""
    name = os.fsencode(path.name).decode("utf-8", "backslashreplace")
    return f"{channel}:" + "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)[:200]


def inbox_files(ws: Workspace) -> list[Path]:
    return sorted(p for p in ws.inbox.glob("*") if p.is_file() and p.suffix.lower() in REQUEST_SUFFIXES)


def intake_inbox(ws: Workspace, ledger: Ledger, documents: list[Any] | None,
                 is_registered: Callable[[str], bool]) -> list[Checked]:
    """Inbox files + documents passed as a flow parameter → ledger; inbox files filed away."""
    files, limits = inbox_files(ws), intake_limits(ws)
    docs = [(read_file(p, limits), source("inbox", p)) for p in files] + [(d, "parameter") for d in documents or []]
    checked = intake_documents(ws, ledger, docs, is_registered)
    for path, c in zip(files, checked[:len(files)], strict=True):
        file_away(ws, path, c)
    return checked


@task(name="intake", retries=2, retry_delay_seconds=2)
def intake_task(root: str, documents: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Inbox files + documents passed as a flow parameter (the Prefect UI) → ledger."""
    from tasks.registry import is_registered

    ws = Workspace.at(root)
    checked = intake_inbox(ws, Ledger(ws.ledger_path), documents, is_registered)
    return [{"request_id": c.entry.request_id, "state": c.entry.state, "reason": c.reason} for c in checked]
