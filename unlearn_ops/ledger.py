"""The request ledger: a durable SQLite record of every request and every state change.

Nothing is ever deleted. A request moves through

    received → validated | rejected → in_batch → forgotten → verified → registered | failed

and a request whose kind needs a person's approval (params.yaml `approval`) waits first:

    validated → awaiting_approval → approved → in_batch …   (or → rejected, with the approver's reason)

and every move is an event row with its time and reason. Rejected documents are kept too (a
malformed one under a generated `invalid-…` ID with its raw text), so nothing sent is ever lost.

Batches are claimed inside one `BEGIN IMMEDIATE` transaction, so two concurrent runs never take
the same request, and a request that needs approval is held in that same transaction, so none is
ever claimed unapproved. A run that pauses for a decision records its flow run in `approval_waits`,
so `unlearn request approve|deny` can resume it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATES = ("received", "validated", "rejected", "awaiting_approval", "approved", "in_batch", "forgotten", "verified",
          "registered", "failed")
TRANSITIONS: dict[str, set[str]] = {
    "received": {"validated", "rejected"},
    "validated": {"in_batch", "rejected", "awaiting_approval"},
    "awaiting_approval": {"approved", "rejected"},
    "approved": {"in_batch"},
    "in_batch": {"forgotten", "failed", "rejected"},
    "forgotten": {"verified", "failed"},
    "verified": {"registered", "failed"},
    "registered": set(), "rejected": set(), "failed": set(),
}
OPEN_BATCH_STATES = ("open",)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ledger_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,
    model       TEXT,
    kind        TEXT,
    state       TEXT NOT NULL,
    reason      TEXT,
    batch_id    TEXT,
    source      TEXT,
    document    TEXT NOT NULL,
    received_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- a request ID is unique among live requests; duplicates are still kept, as rejected rows
CREATE UNIQUE INDEX IF NOT EXISTS live_request_id ON requests(request_id) WHERE state != 'rejected';
CREATE TABLE IF NOT EXISTS events (
    event_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger_id  INTEGER NOT NULL REFERENCES requests(ledger_id),
    request_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    at         TEXT NOT NULL,
    reason     TEXT,
    batch_id   TEXT,
    detail     TEXT
);
-- a flow run paused for a person's decision on a request (the CLI resumes it)
CREATE TABLE IF NOT EXISTS approval_waits (
    ledger_id   INTEGER NOT NULL REFERENCES requests(ledger_id),
    flow_run_id TEXT NOT NULL,
    pause_key   TEXT NOT NULL,
    since       TEXT NOT NULL,
    until       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id   TEXT PRIMARY KEY,
    state      TEXT NOT NULL,          -- open | done | failed
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    progress   TEXT NOT NULL DEFAULT '{}'
);
"""


class LedgerError(RuntimeError):
    pass


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    ledger_id: int
    request_id: str
    model: str | None
    kind: str | None
    state: str
    reason: str | None
    batch_id: str | None
    source: str | None
    document: str
    received_at: str
    updated_at: str

    @property
    def payload(self) -> dict[str, Any]:
        try:
            return json.loads(self.document)
        except json.JSONDecodeError:
            return {}


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # ---------------------------------------------------------------- requests
    def _event(self, db, ledger_id: int, request_id: str, state: str, reason: str | None,
               batch_id: str | None = None, detail: dict | None = None) -> None:
        db.execute("INSERT INTO events(ledger_id, request_id, state, at, reason, batch_id, detail) "
                   "VALUES (?,?,?,?,?,?,?)", (ledger_id, request_id, state, now(), reason, batch_id,
                                               json.dumps(detail, default=str) if detail else None))

    def receive(self, request_id: str | None, document: str, source: str, model: str | None = None,
                kind: str | None = None, received_at: str | None = None) -> Entry:
        """Record a new document as `received`. A duplicate live request ID is recorded as rejected."""
        rid = request_id or f"invalid-{uuid.uuid4().hex[:12]}"
        with self._connect(immediate=True) as db:
            dup = db.execute("SELECT 1 FROM requests WHERE request_id=? AND state != 'rejected'", (rid,)).fetchone()
            state, reason = ("rejected", f"duplicate request_id {rid!r} (already in the ledger)") if dup else ("received", None)
            cur = db.execute("INSERT INTO requests(request_id, model, kind, state, reason, source, document, "
                             "received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                             (rid, model, kind, state, reason, source, document, received_at or now(), now()))
            self._event(db, cur.lastrowid, rid, "received", None, detail={"source": source})
            if dup:
                self._event(db, cur.lastrowid, rid, "rejected", reason)
            return self._get(db, cur.lastrowid)

    def transition(self, ledger_id: int, state: str, reason: str | None = None, batch_id: str | None = None,
                   detail: dict | None = None) -> Entry:
        with self._connect(immediate=True) as db:
            return self._transition(db, ledger_id, state, reason, batch_id, detail)

    def _transition(self, db, ledger_id: int, state: str, reason: str | None, batch_id: str | None,
                    detail: dict | None) -> Entry:
        entry = self._get(db, ledger_id)
        if state == entry.state:
            return entry  # idempotent: re-running a step records nothing twice
        if state not in TRANSITIONS[entry.state]:
            raise LedgerError(f"request {entry.request_id}: {entry.state} → {state} is not allowed")
        db.execute("UPDATE requests SET state=?, reason=COALESCE(?, reason), batch_id=COALESCE(?, batch_id), "
                   "updated_at=? WHERE ledger_id=?", (state, reason, batch_id, now(), ledger_id))
        self._event(db, ledger_id, entry.request_id, state, reason, batch_id or entry.batch_id, detail)
        return self._get(db, ledger_id)

    def note(self, ledger_id: int, reason: str, detail: dict | None = None) -> Entry:
        """An event that changes no state, e.g. a validated request queued for the next run."""
        with self._connect(immediate=True) as db:
            entry = self._get(db, ledger_id)
            self._event(db, ledger_id, entry.request_id, entry.state, reason, entry.batch_id, detail)
            return entry

    def _get(self, db, ledger_id: int) -> Entry:
        row = db.execute("SELECT * FROM requests WHERE ledger_id=?", (ledger_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no ledger entry {ledger_id}")
        return Entry(**dict(row))

    def get(self, ledger_id: int) -> Entry:
        with self._connect() as db:
            return self._get(db, ledger_id)

    def find(self, request_id: str) -> list[Entry]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM requests WHERE request_id=? ORDER BY ledger_id", (request_id,)).fetchall()
        return [Entry(**dict(r)) for r in rows]

    def entries(self, state: str | None = None, batch_id: str | None = None) -> list[Entry]:
        sql, args = "SELECT * FROM requests WHERE 1=1", []
        if state:
            if state not in STATES:
                raise LedgerError(f"unknown state {state!r}; states are {STATES}")
            sql, args = sql + " AND state=?", args + [state]
        if batch_id:
            sql, args = sql + " AND batch_id=?", args + [batch_id]
        with self._connect() as db:
            return [Entry(**dict(r)) for r in db.execute(sql + " ORDER BY ledger_id", args).fetchall()]

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events", []
        if request_id:
            sql, args = sql + " WHERE request_id=?", [request_id]
        with self._connect() as db:
            return [dict(r) for r in db.execute(sql + " ORDER BY event_id", args).fetchall()]

    # ---------------------------------------------------------------- batches
    def claim(self, batch_id: str, hold: Collection[str] = ()) -> list[Entry]:
        """Atomically move every `validated` and `approved` request into a new open batch; [] when
        none. Validated requests of a kind in `hold` move to `awaiting_approval` instead."""
        with self._connect(immediate=True) as db:
            self._hold(db, hold)
            rows = db.execute("SELECT ledger_id FROM requests WHERE state IN ('validated', 'approved') "
                              "ORDER BY ledger_id").fetchall()
            if not rows:
                return []
            db.execute("INSERT INTO batches(batch_id, state, created_at, updated_at) VALUES (?,?,?,?)",
                       (batch_id, "open", now(), now()))
            return [self._transition(db, r["ledger_id"], "in_batch", None, batch_id, None) for r in rows]

    def hold(self, kinds: Collection[str]) -> list[Entry]:
        """Move validated requests of these kinds to `awaiting_approval`; returns them."""
        with self._connect(immediate=True) as db:
            return self._hold(db, kinds)

    def _hold(self, db, kinds: Collection[str]) -> list[Entry]:
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))
        rows = db.execute(f"SELECT ledger_id FROM requests WHERE state='validated' AND kind IN ({marks}) "
                          "ORDER BY ledger_id", tuple(kinds)).fetchall()
        return [self._transition(db, r["ledger_id"], "awaiting_approval", "waits for a person's approval", None, None)
                for r in rows]

    # ---------------------------------------------------------------- approval waits
    def record_wait(self, ledger_id: int, flow_run_id: str, pause_key: str, until: str) -> None:
        """A flow run pauses for a decision on this request (until `until`, ISO time)."""
        with self._connect(immediate=True) as db:
            db.execute("INSERT INTO approval_waits(ledger_id, flow_run_id, pause_key, since, until) VALUES (?,?,?,?,?)",
                       (ledger_id, flow_run_id, pause_key, now(), until))

    def waits(self, ledger_id: int) -> list[dict[str, Any]]:
        """The flow runs that paused for this request, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM approval_waits WHERE ledger_id=? ORDER BY rowid DESC", (ledger_id,))
            return [dict(r) for r in rows.fetchall()]

    def open_batches(self) -> list[str]:
        with self._connect() as db:
            return [r["batch_id"] for r in db.execute("SELECT batch_id FROM batches WHERE state='open' "
                                                      "ORDER BY created_at").fetchall()]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["progress"] = json.loads(out["progress"])
        return out

    def batches(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT batch_id FROM batches ORDER BY created_at").fetchall()
        return [self.batch(r["batch_id"]) for r in rows]  # type: ignore[misc]

    def record_progress(self, batch_id: str, key: str, value: Any) -> None:
        """Store one finished step's result; a resumed run skips steps already recorded."""
        with self._connect(immediate=True) as db:
            row = db.execute("SELECT progress FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
            if row is None:
                raise LedgerError(f"unknown batch {batch_id}")
            progress = json.loads(row["progress"])
            progress[key] = value
            db.execute("UPDATE batches SET progress=?, updated_at=? WHERE batch_id=?",
                       (json.dumps(progress, default=str), now(), batch_id))

    def close_batch(self, batch_id: str, state: str) -> None:
        if state not in ("done", "failed"):
            raise LedgerError(f"a batch closes as done or failed, not {state!r}")
        with self._connect(immediate=True) as db:
            db.execute("UPDATE batches SET state=?, updated_at=? WHERE batch_id=?", (state, now(), batch_id))
