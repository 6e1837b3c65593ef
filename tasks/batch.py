"""A deletion batch's records and bookkeeping: what each step hands to the next (small typed
records, stored as JSON in the ledger's batch progress so a crashed run is resumed), claiming and
locking a batch, the policy chain, and moving requests through the ledger's states."""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from tasks.workspace import Workspace
from unlearn_ops.ledger import Ledger
from unlearn_ops.methods import get_method, is_exact
from unlearn_ops.methods.base import make_config
from unlearn_ops.utils import atomic_write_json
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
SKIPPED, NO_POWER = "skipped", "no_power"                    # not run: it could not pass this batch
WORDS = {PASSED: "PASS", NOT_APPLICABLE: "NOT APPLICABLE", ERROR: "ERROR", SKIPPED: "SKIPPED", NO_POWER: "NO POWER"}


@dataclass(frozen=True)
class PowerCheck(Record):
    """The champion measured as its own candidate on the batch's forget set, once per batch: do the
    gates that carry a `power_margin` reject it by that margin? If not, they cannot tell a method
    that forgot from one that did nothing here, and only an exact method may pass
    (docs/verification.md, "Power check")."""

    has_power: bool
    evidence: dict[str, list[str]]            # request kind → one comparison per gate with a margin
    metrics: dict[str, dict[str, float]]      # the champion's metrics (the evidence)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sentence": self.sentence()}

    def sentence(self) -> str:
        shown = "; ".join(f"{kind}: {', '.join(lines)}" for kind, lines in self.evidence.items())
        if self.has_power:
            return f"power check: these gates reject the champion itself on this forget set by their margin ({shown})"
        return (f"power check: these gates do not reject the champion itself on this forget set by their margin "
                f"({shown}): they cannot tell a method that forgot from one that did nothing here, so only an exact "
                "method can certify this batch")


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
    settings: dict[str, Any] | None = None   # what the method ran with (None: it did not run)
    regressions: list[str] = field(default_factory=list)  # utility gates an exact method passed with

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def judged(self, v: Verification) -> Attempt:
        regressions = [r for g in v.gates.values() for r in g.get("regressions", [])]
        return replace(self, status=PASSED if v.passed else FAILED, metrics=jsonable(v.metrics),
                       gates=jsonable(v.gates), reports={k: str(p) for k, p in v.reports.items()},
                       regressions=regressions)

    def why_not(self) -> str:
        """What stopped it: the failed gates, or the reason it produced no model."""
        if self.status == SKIPPED:
            return f"skipped: {self.reason}"
        return self.reason or ", ".join(f for g in (self.gates or {}).values() for f in g["failed"])

    def summary(self) -> str:
        if self.status == FAILED:
            return "FAIL " + "; ".join(f"{k}: {', '.join(g['failed'])}" for k, g in (self.gates or {}).items()
                                       if not g["passed"])
        words = WORDS[self.status]
        if self.regressions:
            words += " with utility regression: " + ", ".join(self.regressions)
        return words + (f" ({self.reason})" if self.reason else "")

    def certified(self) -> dict[str, Any]:
        """What the certificate shows of it (`details`: what the method did, e.g. which members
        of a sharded model it retrained from which slice)."""
        keep = ("method", "status", "passed", "seconds", "settings", "reason", "traceback", "details", "metrics",
                "gates", "regressions")
        return {k: v for k, v in self.to_dict().items() if k in keep}


def regression_note(regressions: list[str]) -> str | None:
    """What the ledger, the registry tag and the certificate say of an exact model promoted with
    failed utility gates, e.g. `promoted with utility regression: retain_rougeL_drop 0.093 > 0.02`."""
    return "promoted with utility regression: " + ", ".join(regressions) if regressions else None


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
    power: dict[str, Any] | None = None  # PowerCheck.to_dict() with its sentence, when one was needed
    regressions: list[str] = field(default_factory=list)    # utility gates the promoted exact model failed
    retired: list[dict[str, Any]] = field(default_factory=list)  # earlier versions retired (tasks.retention)


@dataclass(frozen=True)
class Erasure(Record):
    """What the batch removed beyond the active store, and the scan that checks nothing is left
    (docs/erasure.md): superseded DVC objects collected, retired weights whose grace period ended,
    the batch work folders' weights, the erasure scan's summary (None: nothing was applied), and
    the build outputs that held deleted weights."""

    collected: dict[str, Any] = field(default_factory=dict)          # tasks.versioning.collect_superseded
    expired: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> weights deleted
    work_deleted: list[str] = field(default_factory=list)           # var/batches/... folders removed
    scan: dict[str, Any] | None = None                               # tasks.certificate.erasure_summary
    builds_deleted: list[dict[str, Any]] = field(default_factory=list)  # tasks.erasure.delete_stale_builds


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


def journaled(ws: Workspace, batch_id: str, name: str, run: Callable[[], Any]) -> Any:
    """An action step's result — what it deleted — merged with what an earlier run of the same step
    did before it was killed: that run's result is written to var/batches/<batch>/done-<name>.json
    as soon as the action returns, so a rerun, which finds nothing left to delete, still records
    (and the certificate still says) what the batch did."""
    path = ws.runs / batch_id / f"done-{name}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else None
    out = jsonable(run())
    out = merged(earlier, out) if earlier is not None else out
    atomic_write_json(path, out)
    return out


def merged(old: Any, new: Any) -> Any:
    """Two results of one action step: lists joined without repeats, dicts key by key, counts added."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: merged(old[k], new[k]) if k in old and k in new else old.get(k, new.get(k)) for k in old | new}
    if isinstance(old, list) and isinstance(new, list):
        return old + [x for x in new if x not in old]
    if isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool):
        return old + new
    return new


def _stored(value: Any) -> Any:
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value.to_dict() if isinstance(value, Record) else value


# ------------------------------------------------------------------------------ the batch
def new_batch_id() -> str:
    return datetime.now(UTC).strftime("batch-%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def claim_or_resume(ledger: Ledger, batch_id: str | None, hold: Collection[str] = ()) -> str | None:
    """The given batch, else the oldest unfinished one, else a new batch of every validated (and
    approved) request; validated requests of the kinds in `hold` wait for approval instead."""
    if batch_id:
        return batch_id if ledger.batch(batch_id) else None
    open_batches = ledger.open_batches()
    if open_batches:
        print(f"resuming unfinished batch {open_batches[0]}")
        return open_batches[0]
    return claim_new(ledger, hold)


def claim_new(ledger: Ledger, hold: Collection[str] = ()) -> str | None:
    """A new batch of every validated and approved request (`hold`: kinds that wait for approval)."""
    claimed = ledger.claim(new_batch_id(), hold)
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


@contextmanager
def inbox_lock(ws: Workspace) -> Iterator[None]:
    """One intake of the inbox at a time on this machine (a blocking lock): two runs started
    together would otherwise both read a file, record it twice (the second as a rejected
    duplicate) and race to file it away."""
    path = ws.runs.parent / "intake.lock"  # var/: git-ignored
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Step(Record):
    """One entry of a policy chain: a method and the settings this entry adds to `unlearn.<method>`."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)


def chain_step(entry: Any, where: str) -> Step:
    """A policy chain entry: a method's name, or `{method: NAME, with: {SETTING: VALUE, ...}}` for a
    method run with settings of its own in this chain only (the method keeps its one name; its
    `unlearn.<name>` section, shared by every chain and benchmark, stays as it is)."""
    if isinstance(entry, str):
        get_method(entry)  # unknown → KeyError naming the registered ones
        return Step(entry)
    if not isinstance(entry, dict) or set(entry) - {"method", "with"} or not isinstance(entry.get("method"), str):
        raise ValueError(f"{where}: a chain entry is a method name or {{method: NAME, with: {{SETTINGS}}}}, "
                         f"not {entry!r}")
    settings = entry.get("with") or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: `with` of `{entry['method']}` must map settings to values, not {settings!r}")
    get_method(entry["method"])
    return Step(entry["method"], dict(settings))


def chain_for(ws: Workspace, model: str, kinds: list[str]) -> list[Step]:
    """The policy's chain for the batch's strongest request kind, every entry's settings checked by
    its method's Config (unknown or invalid settings: ValueError); the last must be exact."""
    kind = next(k for k in KIND_PRIORITY if k in kinds)
    where = f"policy.{model}.{kind}"
    chain = [chain_step(e, where) for e in ws.params["policy"][model][kind]]
    for step in chain:
        make_config(get_method(step.method).Config, ws.method_params(model, step.method, step.settings))
    if not chain or not is_exact(chain[-1].method):
        raise ValueError(f"{where} must end with an exact method such as `retrain` "
                         f"(exact unlearning is the last resort): {[s.method for s in chain]}")
    methods = [s.method for s in chain]
    sharded = ws.is_sharded(model)
    if sharded and methods[-1] != SHARDED_EXACT:
        raise ValueError(f"{where} must end with `{SHARDED_EXACT}`: {model} is sharded (its build section's "
                         f"shards/slices/pool_fraction), and only that retrains just its touched members: {methods}")
    if not sharded and SHARDED_EXACT in methods:
        raise ValueError(f"{where} names `{SHARDED_EXACT}`, but {model} is not sharded: {methods}")
    return chain


ORDER = {"in_batch": 0, "forgotten": 1, "verified": 2, "failed": 3, "registered": 3}


def advance(ledger: Ledger, ledger_ids: list[int], state: str, reason: str | None, batch_id: str,
            detail: dict[str, Any] | None = None) -> None:
    """Move the requests forward; a resumed run skips the moves an earlier run already made."""
    for lid in ledger_ids:
        if ORDER.get(ledger.get(lid).state, 0) < ORDER[state]:
            ledger.transition(lid, state, reason, batch_id, detail)
