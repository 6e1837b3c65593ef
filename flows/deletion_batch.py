"""The `deletion_batch` flow: deletion requests in, a verified and registered model out, and the
forgotten data gone from everything the project keeps.

    intake (inbox files + UI parameter) → claim a batch (ledger) → extract the forget set (record + DVC)
    → per model: run_chain (unlearn with the policy's methods, verify each against the gates,
      until one passes; the chain ends in an exact method, which passes on its privacy gates: a
      failed utility gate is a regression it is promoted with, flagged, never a dropped request)
      → register_candidate (MLflow `candidate`) → promote (`champion`, only when the gates pass)
      → apply_and_retire (purge the forget set from the active store, new DVC version; retire
      the model's earlier versions) → the model's certificate section
    → erase (superseded DVC objects collected, expired weights and the batch's work folders
      deleted, the erasure scan) → certificate → audit-log entry
    → requests that need a person's approval (class, concept): the run pauses for each decision
      (Prefect UI form or `unlearn request approve|deny`); approved ones form a batch of their own

Every finished step is recorded in the ledger's batch progress, so a run that crashed — even
killed outright — is resumed by the next one from the first unfinished step, and re-running a
finished batch changes nothing (tests/flows/test_crash_harness.py kills it after every step,
`tasks.faults.fault_point`). Nothing touches the champion or the active data before the gates pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from prefect import flow
from prefect.states import State
from pydantic.json_schema import SkipJsonSchema

from tasks.approval import ApprovalPolicy, pause_for_decision, record_decision
from tasks.batch import (
    Attempt,
    Deletion,
    Erasure,
    ForgetIds,
    ForgetSet,
    ModelReport,
    ModelWork,
    PowerCheck,
    Progress,
    advance,
    batch_lock,
    chain_for,
    claim_new,
    claim_or_resume,
    final_attempt,
    inbox_lock,
    journaled,
    regression_note,
)
from tasks.certificate import append_to_audit, copy_figures, erasure_summary, issue_certificate, summary_table
from tasks.erasure import collect_task, delete_builds_task, delete_work_task, erasure_scan_task
from tasks.faults import fault_point
from tasks.forget_set import apply_deletion_task, extract_task, relative
from tasks.intake import intake_task
from tasks.registry import fetch_champion_task, promote_task, register_candidate_task
from tasks.report import final_state, publish, queue_waiting
from tasks.request_form import RequestForm, documents
from tasks.retention import grace_days_for, purge_expired_task, retire_task
from tasks.unlearning import cannot_pass, power_task, unlearn_task, verify_task
from tasks.versioning import version_task
from tasks.workspace import Workspace
from unlearn_ops.ledger import Ledger
from unlearn_ops.verify.production import Settings


# ------------------------------------------------------------------------------ steps
def extract(ws: Workspace, steps: Progress) -> ForgetSet:
    """The batch's forget set, written and versioned with DVC once."""
    def run() -> ForgetSet:
        forget_set = extract_task(str(ws.root), steps.batch_id)
        fault_point("extract")
        record = relative(ws, forget_set.record)
        dvc_md5 = version_task(str(ws.root), [record])[record]
        fault_point("dvc_version")
        return replace(forget_set, dvc_md5=dvc_md5)

    return steps.once("extract", run, ForgetSet)


def run_chain(ws: Workspace, steps: Progress, work: ModelWork) -> list[Attempt]:
    """The policy's methods in order, each verified against the gates, until one passes. Each
    attempt is recorded when it ends, so a resumed run goes on from the next method."""
    attempts = [Attempt.from_dict(a) for a in steps.get("attempts", [])]
    chain = chain_for(ws, work.model, work.kinds)
    family, forget = ws.family(work.model), ForgetIds.load(work.work)
    store_dir, champion = str(ws.store_for(work.model).root), str(work.champion_dir)
    batch = ws.params.get("batch") or {}
    gates, settings = ws.gates_for(work.model), Settings.from_params(batch)

    def power() -> PowerCheck:  # the champion judged as its own candidate, once per batch
        return steps.once("power", lambda: power_task(champion, store_dir, forget.ids, work.classes, forget.item_ids,
                                                      work.kinds, family, gates, settings), PowerCheck)

    while not any(a.passed for a in attempts) and len(attempts) < len(chain):
        step = chain[len(attempts)]
        method = step.method
        attempt = cannot_pass(method, store_dir, forget.ids, forget.item_ids, work.classes, work.kinds, gates, power)
        if attempt is None:
            print(f"[{work.model}] unlearning {work.count} samples with `{method}` "
                  f"(attempt {len(attempts) + 1}/{len(chain)})")
            attempt = unlearn_task(champion, store_dir, forget.ids, family, method,
                                   ws.method_params(work.model, method, step.settings), batch.get("device", "auto"),
                                   str(work.attempt_dir(len(attempts), method)))
        fault_point("attempt", method)
        if attempt.model_dir is not None:
            attempt = attempt.judged(verify_task(champion, attempt.model_dir, store_dir, forget.ids, work.classes,
                                                 forget.item_ids, work.kinds, family, gates, method, settings))
        print(f"[{work.model}] `{method}`: {attempt.summary()}")
        attempts.append(attempt)
        steps.record("attempts", attempts)
        fault_point("verify", method)
    return attempts


def register_candidate(ws: Workspace, steps: Progress, work: ModelWork, forget_set: ForgetSet,
                       champion_before: str, attempts: list[Attempt]) -> str | None:
    """The final attempt's model as a new MLflow version (`candidate`) with its lineage, pass or
    fail (a failed one is kept for the audit); None when it produced no model."""
    final = final_attempt(attempts)
    advance(steps.ledger, work.ledger_ids, "forgotten", None, steps.batch_id, {"method": final.method})
    if final.model_dir is None:
        return None
    tags = {"lineage": "deletion-batch", "batch_id": steps.batch_id, "base_version": str(champion_before),
            "request_ids": ",".join(work.request_ids)[:4000], "forget_set_sha256": work.sha256,
            "forget_set_dvc_md5": forget_set.dvc_md5, "method": final.method,
            "fallback_path": " -> ".join(a.method for a in attempts), "verdict": "pass" if final.passed else "fail"}
    if final.passed and final.regressions:  # an exact model failed a utility gate: promoted, flagged
        tags["utility_regression"] = ", ".join(final.regressions)
    metrics = {f"{g}.{m}": v for g, ms in (final.metrics or {}).items() for m, v in ms.items() if v is not None}
    return register_candidate_task(final.model_dir, work.model, ws.family(work.model), steps.batch_id, tags, metrics,
                                   final.settings or ws.method_params(work.model, final.method),
                                   list(final.reports.values()))


def promote(steps: Progress, work: ModelWork, attempts: list[Attempt], candidate: str) -> None:
    """The candidate becomes `champion`: only after the gates passed."""
    advance(steps.ledger, work.ledger_ids, "verified", None, steps.batch_id, {"method": final_attempt(attempts).method})
    if not steps.done("promoted"):
        promote_task(work.model, candidate)
        fault_point("promote")
        steps.record("promoted", candidate)


def apply_and_retire(ws: Workspace, steps: Progress, work: ModelWork, forget_set: ForgetSet,
                     attempts: list[Attempt], candidate: str) -> tuple[Deletion, list[dict[str, Any]]]:
    """The new champion is in place: purge the forget set from the active store (new DVC version,
    pushed), then retire every earlier version of the model (trained on the forget set)."""
    def purge() -> Deletion:
        done = apply_deletion_task(str(ws.root), work.model, work.work, forget_set.record)
        fault_point("purge")
        versions = version_task(str(ws.root), [done["record"], done["store"]])
        fault_point("dvc_commit")
        return Deletion(done["purged"], versions[done["record"]], versions[done["store"]])

    def retire() -> list[dict[str, Any]]:
        retired = retire_task(work.model, candidate, steps.batch_id, grace_days_for(ws.params, work.kinds))
        fault_point("retirement")
        return retired

    deleted = steps.once("applied", purge, Deletion)
    retired = steps.once("retired", retire)
    advance(steps.ledger, work.ledger_ids, "registered", regression_note(final_attempt(attempts).regressions),
            steps.batch_id, {"version": candidate, "data_dvc_md5": deleted.data_dvc_md5})
    return deleted, retired


def model_report(ws: Workspace, steps: Progress, work: ModelWork, forget_set: ForgetSet, champion_before: str,
                 attempts: list[Attempt], candidate: str | None) -> ModelReport:
    """The model's section of the certificate. Passed: its deletion applied and earlier versions
    retired. Failed: the requests are marked failed, champion and data stay exactly as they were."""
    final = final_attempt(attempts)
    report = ModelReport(model=work.model, forget_set={"count": work.count, "sha256": work.sha256,
                                                       "dvc_md5": forget_set.dvc_md5},
                         champion_before=champion_before, champion_after=champion_before,
                         attempts=[a.certified() for a in attempts], candidate=candidate, outcome="failed",
                         power=steps.get("power"),
                         reports=copy_figures(ws, steps.batch_id, work.model, final.reports) if candidate else {})
    if not final.passed:
        reason = "no method of the policy chain passed the gates: " + " | ".join(
            f"{a.method}: {a.why_not()}" for a in attempts)
        advance(steps.ledger, work.ledger_ids, "failed", reason, steps.batch_id)
        return report
    deleted, retired = apply_and_retire(ws, steps, work, forget_set, attempts, candidate)
    return replace(report, champion_after=candidate, outcome="registered", data_dvc_md5=deleted.data_dvc_md5,
                   record_dvc_md5=deleted.record_dvc_md5, regressions=final.regressions, retired=retired)


def forget_in_model(ws: Workspace, steps: Progress, forget_set: ForgetSet, work: ModelWork) -> ModelReport:
    """One model's part of the batch, champion before to champion after (once: a resumed run
    takes a finished model's report from the ledger)."""
    steps = steps.of(work.model)

    def fetch_champion() -> str:
        version = fetch_champion_task(work.model, ws.family(work.model), str(work.champion_dir))
        fault_point("champion")
        return version

    def run() -> ModelReport:
        champion_before = steps.once("champion_before", fetch_champion)
        attempts = run_chain(ws, steps, work)
        candidate = register_candidate(ws, steps, work, forget_set, champion_before, attempts)
        if final_attempt(attempts).passed:
            promote(steps, work, attempts, candidate)
        report = model_report(ws, steps, work, forget_set, champion_before, attempts, candidate)
        fault_point("report", work.model)
        return report

    return steps.once("report", run, ModelReport)


def erase(ws: Workspace, steps: Progress, reports: list[ModelReport]) -> Erasure:
    """After every model's deletion is applied and committed (docs/erasure.md): the superseded DVC
    objects holding forgotten samples are deleted from cache and remotes, retired weights whose
    grace period ended are deleted, and so is a build output holding them (`models/<name>`), the
    batch work folders' weights (pre-deletion champion, attempts) go, and the erasure scan searches
    everything the project keeps for the forgotten samples and the deleted weights: 0 copies expected."""
    root, batch_id = str(ws.root), steps.batch_id
    applied = [r.model for r in reports if r.outcome == "registered"]

    def step(name: str, run: Any, deletes: bool = True) -> Any:
        def then_fault() -> Any:  # what a deleting step did survives a kill before it is recorded
            out = journaled(ws, batch_id, name, run) if deletes else run()
            fault_point(name)
            return out
        return steps.once(name, then_fault)

    collected = step("collection", lambda: collect_task(root, batch_id, applied) if applied else {})
    expired = step("expiry", lambda: purge_expired_task(sorted(ws.served_models())))
    builds_deleted = step("build_outputs", lambda: delete_builds_task(root))
    work_deleted = step("work_folders", lambda: delete_work_task(
        root, sorted(set(steps.ledger.open_batches()) - {batch_id})))
    scan = step("erasure_scan", lambda: erasure_summary(ws, batch_id, erasure_scan_task(root, batch_id, applied))
                if applied else None, deletes=False)
    return Erasure(collected, expired, work_deleted, scan, builds_deleted)


def certify(ws: Workspace, steps: Progress, reports: list[ModelReport], erasure: Erasure,
            times: dict[str, float]) -> dict[str, Any]:
    """The certificate, issued once (a resumed run reuses the recorded one, never re-issues it),
    then its hash appended to the audit log once."""
    def issue() -> dict[str, Any]:
        cert = issue_certificate(ws, steps.ledger, steps.batch_id, reports, erasure, times)
        fault_point("certificate")
        return cert

    def append() -> dict[str, Any]:
        entry = append_to_audit(ws, steps.batch_id, cert)
        fault_point("audit")
        return entry

    cert = steps.once("certificate", issue)
    steps.once("audit", append)
    return cert


# ------------------------------------------------------------------------------ a batch
def run_batch(ws: Workspace, ledger: Ledger, batch_id: str | None, intake: list[dict[str, Any]],
              t0: float) -> dict[str, Any]:
    """One claimed batch, from its forget set to its certificate (or what is already known of it)."""
    if batch_id is None:
        print("no batch to run: no validated or approved requests waiting")
        print(summary_table(ledger, None, intake, []))
        return {"batch_id": None, "intake": intake}
    batch = ledger.batch(batch_id)
    if batch["state"] != "open":
        print(f"batch {batch_id} is already {batch['state']}: nothing to do")
        return {"batch_id": batch_id, "state": batch["state"], "certificate": batch["progress"].get("certificate")}
    with batch_lock(ws, batch_id) as mine:
        if not mine:
            print(f"batch {batch_id} is being processed by another run: this run leaves it to that one, and "
                  "the requests it brought wait for the next run")
            return {"batch_id": batch_id, "state": "busy"}
        steps = Progress(ledger, batch_id)
        forget_set = extract(ws, steps)
        t1 = time.perf_counter()
        reports = [forget_in_model(ws, steps, forget_set, work) for work in forget_set.models]
        erasure = erase(ws, steps, reports)
        times = {"intake_and_extract_s": round(t1 - t0, 2), "unlearn_to_erasure_s": round(time.perf_counter() - t1, 2)}
        cert = certify(ws, steps, reports, erasure, times)
        ledger.close_batch(batch_id, "done" if cert["outcome"] == "REGISTERED" else "failed")
        fault_point("close")
    print(summary_table(ledger, batch_id, intake, reports))
    if erasure.scan is not None:
        print(f"erasure scan: {erasure.scan['copies']} copies of {erasure.scan['samples']} forgotten samples left "
              f"({erasure.scan['expected']} expected)")
    print(f"certificate: {cert['markdown']} ({cert['outcome']})")
    return {"batch_id": batch_id, "state": ledger.batch(batch_id)["state"], "certificate": cert,
            "models": [r.to_dict() for r in reports], "erasure": erasure.to_dict(), "intake": intake}


def ask_for_approval(ledger: Ledger, policy: ApprovalPolicy, wait: bool) -> bool:
    """The requests that wait for a person's decision (params.yaml `approval`): the run pauses for
    each in turn — the Prefect UI shows the form, `unlearn request approve|deny` answers it too —
    until `approval.timeout_s` is spent. Unanswered ones stay waiting for a later run. True when
    any request is approved (the run then claims it into a batch of its own)."""
    ledger.hold(policy.required)  # validated since the claim (e.g. by `unlearn request submit`)
    deadline = time.monotonic() + policy.timeout_s
    for entry in ledger.entries(state="awaiting_approval") if wait else []:
        left = deadline - time.monotonic()
        if left < 1 or ledger.get(entry.ledger_id).state != "awaiting_approval":  # decided meanwhile (CLI)
            continue
        print(f"request {entry.request_id} ({entry.kind} on {entry.model}) needs a person's approval: the run "
              f"pauses for up to {left:.0f} s (Prefect UI: resume with the form; or `unlearn request approve|deny "
              f"{entry.request_id} --approver NAME`)")
        answer = pause_for_decision(ledger, entry, left)
        if answer is None:
            print(f"no decision on {entry.request_id} within approval.timeout_s")
            break
        decided = record_decision(ledger, entry, answer.approve, answer.approver, answer.reason, policy.required)
        print(f"request {entry.request_id}: {decided.state} ({decided.reason})")
    waiting = [e.request_id for e in ledger.entries(state="awaiting_approval")]
    if waiting:
        print(f"{len(waiting)} request(s) await a person's approval and stay in the ledger for a later run: "
              f"{', '.join(waiting)}")
    return bool(ledger.entries(state="approved"))


# ------------------------------------------------------------------------------ the flow
@flow(name="deletion_batch", log_prints=True)
def deletion_batch(requests: Sequence[RequestForm] | SkipJsonSchema[None] = (), batch_id: str = "",
                   root: SkipJsonSchema[str | None] = None, wait_for_approval: bool = True) -> State:
    """Process pending deletion requests: the given ones and the files in the inbox.

    Args:
        requests: Deletion requests to add (Add item: one form per request); files dropped into the
            project's data/requests/inbox/ are picked up too. Each is validated and recorded in the ledger.
        batch_id: Resume or re-show this batch instead of claiming a new one (empty: the open batch, else
            a new one of every waiting request).
        root: The project folder (params.yaml, ledger, stores); not in the UI form: a worker serves its
            UNLEARN_PROJECT_DIR.
        wait_for_approval: Pause for a person's decision on requests that need one (params.yaml
            `approval`), after the batch of those that do not; off, they wait for a later run.
    """
    ws = Workspace.at(root)
    ledger = Ledger(ws.ledger_path)
    policy = ApprovalPolicy.of(ws)
    batch_id = batch_id or None  # the form's empty field
    t0 = time.perf_counter()
    with inbox_lock(ws):
        intake = intake_task(str(ws.root), documents(requests))
    fault_point("intake")
    first = claim_or_resume(ledger, batch_id, policy.required)
    fault_point("claim")
    batches = [run_batch(ws, ledger, first, intake, t0)]
    if batch_id is None and ask_for_approval(ledger, policy, wait_for_approval):
        batches.append(run_batch(ws, ledger, claim_new(ledger, policy.required), [], time.perf_counter()))
    ran = [b for b in batches if b["batch_id"]]
    result = {**(ran[-1] if ran else batches[0]), "intake": intake, "batches": ran,
              "queued": queue_waiting(ledger, intake, ran),
              "awaiting_approval": [e.request_id for e in ledger.entries(state="awaiting_approval")]}
    publish(ledger, result)
    return final_state(result)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    deletion_batch()
