"""A person's approval for requests that remove a capability from a served model.

params.yaml `approval` says per request kind whether a person must approve (`required`) or the
batch goes ahead (`automatic`); by default `class` and `concept` wait, a data subject's and sample
requests never do. A request that needs approval waits in the ledger (`awaiting_approval`) and
is never claimed into a batch before it is `approved`; nothing else waits for it.

A decision comes from one of two places, and both take `record_decision`:
- the Prefect UI: the deletion_batch run pauses for each waiting request with the form
  `ApprovalInput` (`pause_for_decision`; the run records its flow run ID in the ledger first);
- `unlearn request approve|deny ID` (`decide`), which also resumes the run paused for that
  request, if there is one, through the same API the UI uses (`resume_flow_run` with the input).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.input import RunInput
from pydantic import Field

from tasks.workspace import Workspace
from unlearn_ops.ledger import Entry, Ledger
from unlearn_ops.requests import KINDS

log = logging.getLogger(__name__)
REQUIRED, AUTOMATIC = "required", "automatic"
DEFAULTS = {"class": REQUIRED, "concept": REQUIRED, "subject": AUTOMATIC, "samples": AUTOMATIC}
DEFAULT_TIMEOUT_S = 3600
POLL_S = 2          # how often a paused run asks the API whether it was resumed


class ApprovalError(ValueError):
    """A decision that cannot be recorded (unknown request, one that needs no approval, …)."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """params.yaml `approval`: the kinds that wait for a person, and how long a run pauses."""

    required: frozenset[str]
    timeout_s: int

    @classmethod
    def of(cls, ws: Workspace) -> ApprovalPolicy:
        cfg = dict(ws.params.get("approval") or {})
        timeout = int(cfg.pop("timeout_s", DEFAULT_TIMEOUT_S))
        unknown = set(cfg) - set(KINDS)
        bad = {k: v for k, v in cfg.items() if v not in (REQUIRED, AUTOMATIC)}
        if unknown or bad or timeout < 0:
            raise ValueError(f"params.yaml `approval`: give each request kind ({', '.join(KINDS)}) `required` or "
                             f"`automatic`, and timeout_s >= 0; not {ws.params.get('approval')}")
        kinds = {**DEFAULTS, **cfg}
        return cls(frozenset(k for k, v in kinds.items() if v == REQUIRED), timeout)


class ApprovalInput(RunInput):
    """The form a person fills in the Prefect UI to resume a run paused for a request."""

    approver: str = Field(min_length=1, description="Your name: the ledger and the certificate record it.")
    approve: bool = Field(default=False, description="On: the model forgets what the request asks. "
                                                     "Off: the request is rejected.")
    reason: str = Field(default="", description="Why. Needed to deny: the requester is told.")


# ------------------------------------------------------------------ recording a decision
def live_entry(ledger: Ledger, request_id: str) -> Entry:
    """The request's ledger row: its live one (a rejected duplicate is never it), else the latest."""
    rows = ledger.find(request_id)
    if not rows:
        raise ApprovalError(f"no request {request_id!r} in the ledger")
    return next((e for e in reversed(rows) if e.state != "rejected"), rows[-1])


def record_decision(ledger: Ledger, entry: Entry, approve: bool, approver: str, reason: str,
                    required: Collection[str]) -> Entry:
    """Move a waiting request to `approved`, or `rejected` with the approver's name and reason.
    A request already decided keeps its first decision (a resumed run may bring the one the CLI
    recorded back)."""
    entry = ledger.get(entry.ledger_id)
    if entry.state in ("approved", "rejected") and decision_of(ledger, entry) is not None:
        return entry
    if entry.state == "validated" and entry.kind in required:   # not yet held by a batch run: hold it now
        entry = ledger.transition(entry.ledger_id, "awaiting_approval", "waits for a person's approval")
    if entry.state != "awaiting_approval":
        needs = "needs no approval (params.yaml `approval`)" if entry.kind not in required else "is not waiting"
        raise ApprovalError(f"request {entry.request_id} ({entry.kind}) is {entry.state}: it {needs}")
    if not approver.strip():
        raise ApprovalError("an approval needs the approver's name")
    detail = {"approver": approver, "approve": approve, "reason": reason}
    if approve:
        return ledger.transition(entry.ledger_id, "approved", f"approved by {approver}" + (f": {reason}" if reason else ""),
                                 detail=detail)
    return ledger.transition(entry.ledger_id, "rejected", f"denied by {approver}: {reason or 'no reason given'}",
                             detail=detail)


def decision_of(ledger: Ledger, entry: Entry) -> dict[str, Any] | None:
    """Who approved or denied the request, why and when (for the certificate); None if nobody did."""
    for e in reversed(ledger.events(entry.request_id)):
        if e["ledger_id"] == entry.ledger_id and e["state"] in ("approved", "rejected") and e.get("detail"):
            d = json.loads(e["detail"])
            if "approver" in d:
                return {**d, "at": e["at"]}
    return None


def decide(ws: Workspace, request_id: str, approve: bool, approver: str, reason: str = "") -> tuple[Entry, str | None]:
    """`unlearn request approve|deny`: record the decision, then resume the run paused for this
    request, if one is; returns the entry and the resumed flow run's ID (None when no run waits)."""
    ledger = Ledger(ws.ledger_path)
    policy = ApprovalPolicy.of(ws)
    entry = record_decision(ledger, live_entry(ledger, request_id), approve, approver, reason, policy.required)
    if entry.state != ("approved" if approve else "rejected"):
        raise ApprovalError(f"request {entry.request_id} was already {entry.state} ({entry.reason}): "
                            "the first decision stands")
    return entry, resume_waiting_run(ledger, entry, {"approver": approver, "approve": approve, "reason": reason})


def resume_waiting_run(ledger: Ledger, entry: Entry, run_input: dict[str, Any]) -> str | None:
    """Resume the flow run paused for this request (the newest wait not yet over), as the UI does."""
    now = datetime.now(UTC).isoformat()
    waits = [w for w in ledger.waits(entry.ledger_id) if w["until"] > now]
    if not waits:
        return None
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    wait = waits[0]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(wait["flow_run_id"])).state
    if state is None or not state.is_paused() or state.state_details.pause_key != wait["pause_key"]:
        return None  # the run moved on (timed out, or asks about another request): the ledger holds the decision
    resume_flow_run(UUID(wait["flow_run_id"]), run_input=run_input)
    return wait["flow_run_id"]


# ------------------------------------------------------------------ the paused run
def describe(entry: Entry) -> str:
    """What the person deciding sees in the Prefect UI above the form."""
    doc = entry.payload
    target = {"class": f"class {doc.get('class_label')!r}", "concept": f"concept {doc.get('concept')!r}"}.get(
        entry.kind or "", entry.kind or "")
    lines = [f"### Deletion request `{entry.request_id}` needs a person's approval",
             f"It asks model `{entry.model}` to forget its {target}: a capability the served model loses.",
             f"Requester: {doc.get('requester') or '-'}. Reason given: {doc.get('reason') or '-'}.",
             "Approve and the batch forgets it now; deny with a reason and the request is rejected. "
             f"From a shell: `unlearn request approve {entry.request_id} --approver NAME`."]
    return "\n\n".join(lines)


def pause_for_decision(ledger: Ledger, entry: Entry, timeout_s: float) -> ApprovalInput | None:
    """Pause the current flow run until a person decides on `entry` (the UI's form, or the CLI's
    resume); None when nobody did within `timeout_s`."""
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    run_id = str(FlowRunContext.get().flow_run.id)
    key = f"approval-{entry.ledger_id}"
    until = datetime.now(UTC) + timedelta(seconds=timeout_s)
    ledger.record_wait(entry.ledger_id, run_id, key, until.isoformat())
    form = ApprovalInput.with_initial_data(description=describe(entry))
    try:
        return pause_flow_run(wait_for_input=form, timeout=max(1, int(timeout_s)), poll_interval=POLL_S, key=key)
    except FlowPauseTimeout:
        running_again(run_id)
        return None


def running_again(flow_run_id: str) -> None:
    """After a pause that timed out, Prefect would fail the run when it ends. Here a timeout is a
    normal outcome (the request waits for a later run), so the run takes itself back to Running,
    past the rule that refuses a resume after the deadline, and ends as what it did."""
    from prefect import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), Running(message="approval wait timed out: the request waits"),
                                  force=True)
