"""The `deletion_batch` flow: deletion requests in, a verified and registered model out.

    intake (inbox files + UI parameter) → claim a batch (ledger) → extract the forget set (record + DVC)
    → per model: run_chain (unlearn with the policy's methods, verify each against the gates,
      until one passes; the chain ends in an exact method) → register_candidate (MLflow `candidate`)
      → promote (`champion`, only when the gates pass) → apply_and_certify (purge the forget set
      from the active store, new DVC version; the model's certificate section)
    → certificate + audit-log entry

Every finished step is recorded in the ledger's batch progress, so a run that crashed is
resumed by the next one from the first unfinished step, and re-running a finished batch changes
nothing. Nothing touches the champion or the active data before the gates pass.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from prefect import flow

from tasks.batch import (
    Attempt,
    Deletion,
    ForgetIds,
    ForgetSet,
    ModelReport,
    ModelWork,
    PowerCheck,
    Progress,
    advance,
    batch_lock,
    chain_for,
    claim_or_resume,
    final_attempt,
)
from tasks.certificate import copy_figures, issue_certificate, summary_table
from tasks.forget_set import apply_deletion_task, extract_task, relative
from tasks.intake import intake_task
from tasks.registry import fetch_champion_task, promote_task, register_candidate_task
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
        record = relative(ws, forget_set.record)
        return replace(forget_set, dvc_md5=version_task(str(ws.root), [record])[record])

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
        method = chain[len(attempts)]
        attempt = cannot_pass(method, store_dir, forget.ids, forget.item_ids, work.classes, work.kinds, gates, power)
        if attempt is None:
            print(f"[{work.model}] unlearning {work.count} samples with `{method}` "
                  f"(attempt {len(attempts) + 1}/{len(chain)})")
            attempt = unlearn_task(champion, store_dir, forget.ids, family, method,
                                   ws.method_params(work.model, method), batch.get("device", "auto"),
                                   str(work.attempt_dir(len(attempts), method)))
        if attempt.model_dir is not None:
            attempt = attempt.judged(verify_task(champion, attempt.model_dir, store_dir, forget.ids, work.classes,
                                                 forget.item_ids, work.kinds, family, gates, method, settings))
        print(f"[{work.model}] `{method}`: {attempt.summary()}")
        attempts.append(attempt)
        steps.record("attempts", attempts)
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
    metrics = {f"{g}.{m}": v for g, ms in (final.metrics or {}).items() for m, v in ms.items() if v is not None}
    return register_candidate_task(final.model_dir, work.model, ws.family(work.model), steps.batch_id, tags, metrics,
                                   ws.method_params(work.model, final.method), list(final.reports.values()))


def promote(steps: Progress, work: ModelWork, attempts: list[Attempt], candidate: str) -> None:
    """The candidate becomes `champion`: only after the gates passed."""
    advance(steps.ledger, work.ledger_ids, "verified", None, steps.batch_id, {"method": final_attempt(attempts).method})
    if not steps.done("promoted"):
        promote_task(work.model, candidate)
        steps.record("promoted", candidate)


def apply_and_certify(ws: Workspace, steps: Progress, work: ModelWork, forget_set: ForgetSet, champion_before: str,
                      attempts: list[Attempt], candidate: str | None) -> ModelReport:
    """Passed: purge the forget set from the active store (new DVC version) and mark the requests
    registered. Failed: mark them failed, champion and data untouched. Either way the model's
    section of the certificate."""
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

    def purge() -> Deletion:
        done = apply_deletion_task(str(ws.root), work.model, work.work, forget_set.record)
        versions = version_task(str(ws.root), [done["record"], done["store"]])
        return Deletion(done["purged"], versions[done["record"]], versions[done["store"]])

    deleted = steps.once("applied", purge, Deletion)
    advance(steps.ledger, work.ledger_ids, "registered", None, steps.batch_id,
            {"version": candidate, "data_dvc_md5": deleted.data_dvc_md5})
    return replace(report, champion_after=candidate, outcome="registered", data_dvc_md5=deleted.data_dvc_md5,
                   record_dvc_md5=deleted.record_dvc_md5)


def forget_in_model(ws: Workspace, steps: Progress, forget_set: ForgetSet, work: ModelWork) -> ModelReport:
    """One model's part of the batch, champion before to champion after."""
    steps = steps.of(work.model)
    champion_before = steps.once("champion_before", lambda: fetch_champion_task(
        work.model, ws.family(work.model), str(work.champion_dir)))
    attempts = run_chain(ws, steps, work)
    candidate = register_candidate(ws, steps, work, forget_set, champion_before, attempts)
    if final_attempt(attempts).passed:
        promote(steps, work, attempts, candidate)
    return apply_and_certify(ws, steps, work, forget_set, champion_before, attempts, candidate)


# ------------------------------------------------------------------------------ the flow
@flow(name="deletion_batch", log_prints=True)
def deletion_batch(requests: list[dict[str, Any]] | None = None, batch_id: str | None = None,
                   root: str | None = None) -> dict[str, Any]:
    """Process pending deletion requests. `requests`: request documents (e.g. typed in the Prefect
    UI); inbox files are always picked up. `batch_id`: resume or re-show a given batch."""
    ws = Workspace.at(root)
    ledger = Ledger(ws.ledger_path)
    t0 = time.perf_counter()
    intake = intake_task(str(ws.root), requests)
    batch_id = claim_or_resume(ledger, batch_id)
    if batch_id is None:
        print("no validated requests waiting: nothing to do")
        print(summary_table(ledger, None, intake, []))
        return {"batch_id": None, "intake": intake}
    batch = ledger.batch(batch_id)
    if batch["state"] != "open":
        print(f"batch {batch_id} is already {batch['state']}: nothing to do")
        return {"batch_id": batch_id, "state": batch["state"], "certificate": batch["progress"].get("certificate")}
    with batch_lock(ws, batch_id) as mine:
        if not mine:
            print(f"batch {batch_id} is being processed by another run: skipping")
            return {"batch_id": batch_id, "state": "busy"}
        steps = Progress(ledger, batch_id)
        forget_set = extract(ws, steps)
        t1 = time.perf_counter()
        reports = [forget_in_model(ws, steps, forget_set, work) for work in forget_set.models]
        times = {"intake_and_extract_s": round(t1 - t0, 2), "unlearn_to_register_s": round(time.perf_counter() - t1, 2)}
        cert = issue_certificate(ws, ledger, batch_id, reports, times)
        steps.record("certificate", cert)
        ledger.close_batch(batch_id, "done" if all(r.outcome == "registered" for r in reports) else "failed")
    print(summary_table(ledger, batch_id, intake, reports))
    print(f"certificate: {cert['markdown']} ({cert['outcome']})")
    return {"batch_id": batch_id, "state": ledger.batch(batch_id)["state"], "certificate": cert,
            "models": [r.to_dict() for r in reports], "intake": intake}


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    deletion_batch()
