"""A deletion batch's records and bookkeeping: what each step hands to the next (small typed
records, stored as JSON in the ledger's batch progress so a crashed run is resumed), claiming and
locking a batch, the policy chain, and moving requests through the ledger's states."""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from tasks.workspace import Workspace
from unlearn_ops.ledger import Ledger
from unlearn_ops.methods import is_exact
from unlearn_ops.verify.production import Verification

KIND_PRIORITY = ("class", "concept", "subject", "samples")  # a mixed batch uses the chain of its strongest kind
SHARDED_EXACT = "sharded_retrain"  # the exact end of every chain of a sharded model
R = TypeVar("R", bound="Record")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (numpy scalars and arrays become numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class Record:
    """A dataclass stored as JSON in the ledger: `from_dict(to_dict())` gives it back."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class ForgetIds(Record):
    """The IDs of one model's forget set (var/batches/<batch>/<model>/forget_ids.json: too many
    for the ledger). `item_ids`: those removed by item requests, not by a whole-class deletion."""

    ids: list[str]
    item_ids: list[str]

    FILE = "forget_ids.json"

    @classmethod
    def load(cls, work: str | Path) -> ForgetIds:
        return cls.from_dict(json.loads((Path(work) / cls.FILE).read_text()))


@dataclass(frozen=True)
class ModelWork(Record):
    """One model's share of a batch, as extracted."""

    model: str
    count: int
    sha256: str              # of the forget set's (ID, content hash) pairs
    kinds: list[str]
    classes: list[int]
    ledger_ids: list[int]
    request_ids: list[str]
    work: str                # var/batches/<batch>/<model>: forget IDs, champion, attempts

    @property
    def champion_dir(self) -> Path:
        return Path(self.work) / "champion"

    def attempt_dir(self, index: int, method: str) -> Path:
        return Path(self.work) / f"attempt-{index}-{method}"


@dataclass(frozen=True)
class ForgetSet(Record):
    """The batch's forget-set record (IDs, hashes, request IDs; never data) and its DVC version."""

    record: str                      # data/forget_sets/<batch>.json
    models: list[ModelWork]
    dvc_md5: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForgetSet:
        return cls(data["record"], [ModelWork.from_dict(m) for m in data["models"]], data.get("dvc_md5", ""))


# what an attempt came to
UNLEARNED, PASSED, FAILED = "unlearned", "passed", "failed"  # unlearned: not verified yet
NOT_APPLICABLE, ERROR = "not_applicable", "error"            # no model: the method does not apply / raised


@dataclass(frozen=True)
class Attempt(Record):
    """One method of the chain on this batch."""

    method: str
    status: str
    seconds: float = 0.0
    model_dir: str | None = None
    reason: str | None = None        # why it does not apply, or the error
    traceback: str | None = None     # of an error
    details: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None
    gates: dict[str, dict[str, Any]] | None = None
    reports: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def judged(self, v: Verification) -> Attempt:
        return replace(self, status=PASSED if v.passed else FAILED, metrics=jsonable(v.metrics),
                       gates=jsonable(v.gates), reports={k: str(p) for k, p in v.reports.items()})

    def why_not(self) -> str:
        """What stopped it: the failed gates, or the reason it produced no model."""
        return self.reason or ", ".join(f for g in (self.gates or {}).values() for f in g["failed"])

    def summary(self) -> str:
        if self.status == FAILED:
            return "FAIL " + "; ".join(f"{k}: {', '.join(g['failed'])}" for k, g in (self.gates or {}).items()
                                       if not g["passed"])
        words = {PASSED: "PASS", NOT_APPLICABLE: "NOT APPLICABLE", ERROR: "ERROR"}[self.status]
        return words + (f" ({self.reason})" if self.reason else "")

    def certified(self) -> dict[str, Any]:
        """What the certificate shows of it (`details`: what the method did, e.g. which members
        of a sharded model it retrained from which slice)."""
        keep = ("method", "status", "passed", "seconds", "reason", "traceback", "details", "metrics", "gates")
        return {k: v for k, v in self.to_dict().items() if k in keep}


def final_attempt(attempts: list[Attempt]) -> Attempt:
    """The attempt that decides the batch: the one that passed, else the last."""
    return next((a for a in attempts if a.passed), attempts[-1])


@dataclass(frozen=True)
class Deletion(Record):
    """The forget set gone from the active store: what was purged and the new DVC versions."""

    purged: str
    record_dvc_md5: str
    data_dvc_md5: str


@dataclass(frozen=True)
class ModelReport(Record):
    """One model's section of the certificate."""

    model: str
    forget_set: dict[str, Any]          # count, sha256, dvc_md5
    champion_before: str
    champion_after: str
    attempts: list[dict[str, Any]]      # Attempt.certified()
    candidate: str | None
    outcome: str                        # registered | failed
    reports: dict[str, str] = field(default_factory=dict)   # PNG name → path beside the certificate
    data_dvc_md5: str | None = None
    record_dvc_md5: str | None = None


# ------------------------------------------------------------------------------ progress
@dataclass(frozen=True)
class Progress:
    """A batch's finished steps in the ledger (`progress`): a resumed run skips what is recorded.
    A model's steps are scoped `<model>:<step>`."""

    ledger: Ledger
    batch_id: str
    scope: str = ""

    def of(self, model: str) -> Progress:
        return replace(self, scope=model)

    def key(self, step: str) -> str:
        return f"{self.scope}:{step}" if self.scope else step

    def get(self, step: str, default: Any = None) -> Any:
        return self.ledger.batch(self.batch_id)["progress"].get(self.key(step), default)

    def done(self, step: str) -> bool:
        return self.key(step) in self.ledger.batch(self.batch_id)["progress"]

    def record(self, step: str, value: Any) -> None:
        self.ledger.record_progress(self.batch_id, self.key(step), _stored(value))

    def once(self, step: str, run: Callable[[], Any], as_type: type[R] | None = None) -> Any:
        """`run()` unless an earlier run finished this step; either way the recorded result."""
        if not self.done(step):
            self.record(step, run())
        value = self.get(step)
        return as_type.from_dict(value) if as_type is not None else value


def _stored(value: Any) -> Any:
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value.to_dict() if isinstance(value, Record) else value


# ------------------------------------------------------------------------------ the batch
def new_batch_id() -> str:
    return datetime.now(UTC).strftime("batch-%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def claim_or_resume(ledger: Ledger, batch_id: str | None) -> str | None:
    """The given batch, else the oldest unfinished one, else a new batch of every validated request."""
    if batch_id:
        return batch_id if ledger.batch(batch_id) else None
    open_batches = ledger.open_batches()
    if open_batches:
        print(f"resuming unfinished batch {open_batches[0]}")
        return open_batches[0]
    claimed = ledger.claim(new_batch_id())
    return claimed[0].batch_id if claimed else None


@contextmanager
def batch_lock(ws: Workspace, batch_id: str) -> Iterator[bool]:
    """An exclusive, non-blocking lock per batch: a second run on this machine skips a batch
    that is being processed (yields False) instead of processing it twice."""
    path = ws.runs / batch_id / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def chain_for(ws: Workspace, model: str, kinds: list[str]) -> list[str]:
    """The policy's methods for the batch's strongest request kind; the last must be exact, and
    for a sharded model `sharded_retrain` (which only a sharded model can run)."""
    kind = next(k for k in KIND_PRIORITY if k in kinds)
    chain = list(ws.params["policy"][model][kind])
    if not chain or not is_exact(chain[-1]):
        raise ValueError(f"policy.{model}.{kind} must end with an exact method such as `retrain` "
                         f"(exact unlearning is the last resort): {chain}")
    sharded = ws.is_sharded(model)
    if sharded and chain[-1] != SHARDED_EXACT:
        raise ValueError(f"policy.{model}.{kind} must end with `{SHARDED_EXACT}`: {model} is sharded (its build "
                         f"section's shards/slices/pool_fraction), and only that retrains just its touched members: {chain}")
    if not sharded and SHARDED_EXACT in chain:
        raise ValueError(f"policy.{model}.{kind} names `{SHARDED_EXACT}`, but {model} is not sharded: {chain}")
    return chain


ORDER = {"in_batch": 0, "forgotten": 1, "verified": 2, "failed": 3, "registered": 3}


def advance(ledger: Ledger, ledger_ids: list[int], state: str, reason: str | None, batch_id: str,
            detail: dict[str, Any] | None = None) -> None:
    """Move the requests forward; a resumed run skips the moves an earlier run already made."""
    for lid in ledger_ids:
        if ORDER.get(ledger.get(lid).state, 0) < ORDER[state]:
            ledger.transition(lid, state, reason, batch_id, detail)
