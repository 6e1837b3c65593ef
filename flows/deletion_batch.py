"""The `deletion_batch` flow: deletion requests in, a verified and registered model out.

    intake (inbox files + UI parameter) → validate (schema + GX) → claim a batch (ledger lock)
    → extract the forget set (record + DVC) → unlearn with the policy's method chain
    → verify against the gates (fallback to the next method on failure; the chain ends in retrain)
    → register in MLflow (`candidate`; `champion` only when the gates pass)
    → purge the forgotten samples from the active store (new DVC version) → audit certificate

Every finished step is recorded in the ledger's batch progress, so a run that crashed is
resumed by the next one from the first unfinished step, and re-running a finished batch changes
nothing. Nothing touches the champion or the active data before the gates pass.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task

from tasks.intake import intake_task, validate_pending
from tasks.registry import (
    CANDIDATE,
    CHAMPION,
    find_version,
    is_registered,
    load_version,
    log_and_register,
    set_alias,
    version_by_alias,
)
from tasks.unlearning import unlearn_task, verify_task
from tasks.versioning import version_task
from tasks.workspace import Workspace
from unlearn_ops.audit import AuditLog, write_certificate
from unlearn_ops.ledger import Ledger
from unlearn_ops.methods import is_exact
from unlearn_ops.models import save_any
from unlearn_ops.requests import parse_request
from unlearn_ops.utils import atomic_write_json, canonical_json, sha256_bytes

KIND_PRIORITY = ("class", "concept", "subject", "samples")  # a mixed batch uses the chain of its strongest kind


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("batch-%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


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


def chain_for(ws: Workspace, model: str, kinds: set[str]) -> list[str]:
    kind = next(k for k in KIND_PRIORITY if k in kinds)
    chain = list(ws.params["policy"][model][kind])
    if not chain or not is_exact(chain[-1]):
        raise ValueError(f"policy.{model}.{kind} must end with an exact method such as `retrain` "
                         f"(exact unlearning is the last resort): {chain}")
    return chain


# ------------------------------------------------------------------------- steps
def claim_or_resume(ws: Workspace, ledger: Ledger, batch_id: str | None) -> str | None:
    if batch_id:
        return batch_id if ledger.batch(batch_id) else None
    open_batches = ledger.open_batches()
    if open_batches:
        print(f"resuming unfinished batch {open_batches[0]}")
        return open_batches[0]
    claimed = ledger.claim(new_batch_id())
    return claimed[0].batch_id if claimed else None


@task(name="extract-forget-set", retries=2, retry_delay_seconds=2)
def extract_task(root: str, batch_id: str) -> dict[str, Any]:
    """Re-validate the batch's requests against the current data, then write the forget-set record
    (IDs, content hashes, request IDs — never raw data) and version it with DVC."""
    ws = Workspace.at(root)
    ledger = Ledger(ws.ledger_path)
    entries = [e for e in ledger.entries(batch_id=batch_id) if e.state == "in_batch"]
    pending = [(e, parse_request(e.document)) for e in entries]
    checked = validate_pending(ws, ledger, pending, is_registered)
    for c in checked:
        if c.reason:
            ledger.transition(c.entry.ledger_id, "rejected", f"at batch time: {c.reason}", batch_id)
    models: dict[str, dict[str, Any]] = {}
    for c in (c for c in checked if not c.reason):
        m = models.setdefault(c.request.model, {"request_ids": [], "ledger_ids": [], "kinds": set(), "classes": set(),
                                                 "sample_ids": set(), "item_ids": set()})
        m["request_ids"].append(c.request.request_id)
        m["ledger_ids"].append(c.entry.ledger_id)
        m["kinds"].add(c.request.kind)
        m["sample_ids"].update(c.sample_ids)
        if c.request.kind == "class":
            m["classes"].add(ws.store_for(c.request.model).class_index(c.request.class_label))
        else:
            m["item_ids"].update(c.sample_ids)
    record: dict[str, Any] = {"batch_id": batch_id, "created_at": datetime.now(UTC).isoformat(),
                              "models": {}, "applied": {}}
    summary: dict[str, Any] = {}
    for model, m in models.items():
        store = ws.store_for(model)
        ids = sorted(m["sample_ids"])
        hashes = store.hashes(ids)
        digest = sha256_bytes(canonical_json(list(zip(ids, hashes, strict=True))).encode())
        record["models"][model] = {"dataset": store.name, "request_ids": m["request_ids"], "kinds": sorted(m["kinds"]),
                                   "classes": sorted(m["classes"]), "sample_ids": ids, "sha256": hashes,
                                   "forget_set_sha256": digest}
        record["applied"][model] = False
        work = ws.runs / batch_id / model
        atomic_write_json(work / "forget_ids.json", {"ids": ids, "item_ids": sorted(m["item_ids"])}, indent=None)
        summary[model] = {"count": len(ids), "sha256": digest, "kinds": sorted(m["kinds"]), "classes": sorted(m["classes"]),
                          "ledger_ids": m["ledger_ids"], "work": str(work)}
    path = ws.forget_sets / f"{batch_id}.json"
    atomic_write_json(path, record)
    md5 = version_task.fn(str(ws.root), [str(path.relative_to(ws.root))])[str(path.relative_to(ws.root))]
    return {"record": str(path), "dvc_md5": md5, "models": summary}


@task(name="fetch-champion", retries=2, retry_delay_seconds=2)
def fetch_champion_task(model: str, out_dir: str) -> str:
    champion = version_by_alias(model, CHAMPION)
    if champion is None:
        raise RuntimeError(f"{model} has no `{CHAMPION}` alias: run the build first")
    m, spec, version = load_version(model, str(champion.version))
    save_any(m, spec, out_dir)
    return version


@task(name="register-candidate", retries=2, retry_delay_seconds=2)
def register_task(model_dir: str, model: str, batch_id: str, tags: dict[str, str], metrics: dict[str, float],
                  params: dict[str, Any], artifacts: list[str] = ()) -> str:
    """Idempotent: a batch registers at most one version per model (looked up by its batch tag)."""
    existing = find_version(model, "batch_id", batch_id)
    if existing:
        return existing
    version = log_and_register(model_dir, name=model, experiment="deletion-batches", run_name=batch_id,
                               params=params, metrics=metrics, tags=tags, artifacts=artifacts)
    set_alias(model, CANDIDATE, version)
    return version


@task(name="promote", retries=2, retry_delay_seconds=2)
def promote_task(model: str, version: str) -> None:
    set_alias(model, CHAMPION, version)


@task(name="apply-deletion", retries=2, retry_delay_seconds=2)
def apply_deletion_task(root: str, batch_id: str, model: str, record_path: str) -> dict[str, str]:
    """Remove the forget set from the active manifest, purge its bytes, mark the record applied,
    and version both with DVC. Only ever runs after the new champion is in place."""
    ws = Workspace.at(root)
    store = ws.store_for(model)
    ids = json.loads((ws.runs / batch_id / model / "forget_ids.json").read_text())["ids"]
    drop = set(ids)
    store.write_manifest([i for i in store.active_ids() if i not in drop])
    purged = store.purge(ids)
    record = json.loads(Path(record_path).read_text())
    record["applied"][model] = True
    atomic_write_json(record_path, record)
    rels = [str(Path(record_path).relative_to(ws.root)), str(store.root.relative_to(ws.root))]
    versions = version_task.fn(root, rels)
    return {"purged": str(purged), "record_dvc_md5": versions[rels[0]], "data_dvc_md5": versions[rels[1]]}


PROGRESS = {"in_batch": 0, "forgotten": 1, "verified": 2, "failed": 3, "registered": 3}


def _move_all(ledger: Ledger, ids: list[int], state: str, reason: str | None, batch_id: str,
              detail: dict | None = None) -> None:
    """Move the requests forward; a resumed run skips the moves an earlier run already made."""
    for lid in ids:
        if PROGRESS.get(ledger.get(lid).state, 0) < PROGRESS[state]:
            ledger.transition(lid, state, reason, batch_id, detail)


def process_model(ws: Workspace, ledger: Ledger, batch_id: str, model: str, info: dict[str, Any],
                  record: dict[str, Any]) -> dict[str, Any]:
    """Unlearn → verify (with fallback) → register → promote → purge, for one model."""
    key = lambda step: f"{model}:{step}"  # noqa: E731
    progress = ledger.batch(batch_id)["progress"]
    work = Path(info["work"])
    forget = json.loads((work / "forget_ids.json").read_text())
    store_dir = str(ws.store_for(model).root)
    champion_dir = work / "champion"
    if key("champion_before") not in progress:
        ledger.record_progress(batch_id, key("champion_before"), fetch_champion_task(model, str(champion_dir)))
        progress = ledger.batch(batch_id)["progress"]
    champion_before = progress[key("champion_before")]

    params, gates = ws.params, ws.gates_for(model)
    attempts: list[dict[str, Any]] = list(progress.get(key("attempts"), []))
    chain = chain_for(ws, model, set(info["kinds"]))
    batch = params.get("batch") or {}
    device, seed = batch.get("device", "auto"), batch.get("seed", 0)
    while not any(a["passed"] for a in attempts) and len(attempts) < len(chain):
        method = chain[len(attempts)]
        print(f"[{model}] unlearning {info['count']} samples with `{method}` (attempt {len(attempts) + 1}/{len(chain)})")
        a = unlearn_task(str(champion_dir), store_dir, forget["ids"], method, ws.method_params(model, method),
                         device, str(work / f"attempt-{len(attempts)}-{method}"))
        a["passed"] = False
        if "error" not in a:
            v = verify_task(str(champion_dir), a["model_dir"], store_dir, forget["ids"], info["classes"],
                            forget["item_ids"], info["kinds"], gates, seed, method=method,
                            gan_samples=batch.get("gan_samples", 2000), ppl_snippets=batch.get("ppl_snippets", 64),
                            verify_retain=batch.get("verify_retain", 0))
            a.update(passed=v["passed"], metrics=v["metrics"], gates=v["gates"], reports=v["reports"])
        print(f"[{model}] `{method}`: " + ("PASS" if a["passed"] else "FAIL " + (a.get("error") or
              "; ".join(f"{k}: {', '.join(g['failed'])}" for k, g in a["gates"].items() if not g["passed"]))))
        attempts.append(a)
        ledger.record_progress(batch_id, key("attempts"), attempts)
    final = next((a for a in attempts if a["passed"]), attempts[-1])
    passed = bool(final["passed"])
    _move_all(ledger, info["ledger_ids"], "forgotten", None, batch_id, {"method": final["method"]})

    report: dict[str, Any] = {"model": model, "forget_set": {"count": info["count"], "sha256": info["sha256"],
                                                             "dvc_md5": record["dvc_md5"]},
                              "champion_before": champion_before, "attempts": [
                                  {k: a.get(k) for k in ("method", "passed", "seconds", "error", "metrics", "gates")}
                                  for a in attempts]}
    candidate = None
    if "model_dir" in final:
        flat = {f"{g}.{m}": v for g, ms in (final.get("metrics") or {}).items() for m, v in ms.items() if v is not None}
        tags = {"lineage": "deletion-batch", "batch_id": batch_id, "base_version": str(champion_before),
                "request_ids": ",".join(record["models_requests"][model])[:4000], "forget_set_sha256": info["sha256"],
                "forget_set_dvc_md5": record["dvc_md5"], "method": final["method"],
                "fallback_path": " -> ".join(a["method"] for a in attempts), "verdict": "pass" if passed else "fail"}
        candidate = register_task(final["model_dir"], model, batch_id, tags, flat,
                                  ws.method_params(model, final["method"]),
                                  list((final.get("reports") or {}).values()))
        # the certificate embeds the final attempt's plots, copied beside it
        figures = ws.certificates / batch_id
        figures.mkdir(parents=True, exist_ok=True)
        report["reports"] = {}
        for name, src in (final.get("reports") or {}).items():
            dst = figures / f"{model}-{Path(src).name}"
            shutil.copy2(src, dst)
            report["reports"][name] = str(dst.relative_to(ws.certificates))
    report["candidate"] = candidate
    if not passed:
        reason = "every method in the policy chain failed the gates: " + " | ".join(
            f"{a['method']}: {a.get('error') or ', '.join(f for g in a['gates'].values() for f in g['failed'])}"
            for a in attempts)
        _move_all(ledger, info["ledger_ids"], "failed", reason, batch_id)
        report.update(champion_after=champion_before, outcome="failed")
        return report
    _move_all(ledger, info["ledger_ids"], "verified", None, batch_id, {"method": final["method"]})
    if key("promoted") not in progress:
        promote_task(model, candidate)
        ledger.record_progress(batch_id, key("promoted"), candidate)
    if key("applied") not in progress:
        ledger.record_progress(batch_id, key("applied"),
                               apply_deletion_task(str(ws.root), batch_id, model, record["record"]))
    applied = ledger.batch(batch_id)["progress"][key("applied")]
    _move_all(ledger, info["ledger_ids"], "registered", None, batch_id,
              {"version": candidate, "data_dvc_md5": applied["data_dvc_md5"]})
    report.update(champion_after=candidate, outcome="registered", data_dvc_md5=applied["data_dvc_md5"],
                  record_dvc_md5=applied["record_dvc_md5"])
    return report


def certificate(ws: Workspace, ledger: Ledger, batch_id: str, models: list[dict[str, Any]],
                times: dict[str, float]) -> dict[str, Any]:
    entries = ledger.entries(batch_id=batch_id)
    outcome = "REGISTERED" if models and all(m["outcome"] == "registered" for m in models) else (
        "NOTHING TO DO" if not models else "FAILED")
    cert = {"batch_id": batch_id, "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcome": outcome, "models": models, "times": times,
            "requests": [{"request_id": e.request_id, "kind": e.kind, "model": e.model, "state": e.state,
                          "reason": e.reason, "received_at": e.received_at} for e in entries]}
    json_path, md_path, digest = write_certificate(cert, ws.certificates)
    AuditLog(ws.audit_log, ws.certificates).append(batch_id, json_path)
    return {"json": str(json_path), "markdown": str(md_path), "sha256": digest, "outcome": outcome}


def summary_table(ledger: Ledger, batch_id: str | None, intake: list[dict[str, Any]], models: list[dict[str, Any]]) -> str:
    methods = {m["model"]: m for m in models}
    rows = [f"{'request':<24} {'kind':<8} {'state':<11} {'method (path)':<28} {'gates':<6} champion before→after  reason"]
    seen = set()
    entries = ledger.entries(batch_id=batch_id) if batch_id else []
    intake_only = [ledger.find(r["request_id"])[-1] for r in intake if r["state"] == "rejected"]
    for e in entries + intake_only:
        if e.ledger_id in seen:
            continue
        seen.add(e.ledger_id)
        m = methods.get(e.model or "", {})
        path = " → ".join(a["method"] for a in m.get("attempts", [])) or "-"
        gates = "-" if not m else ("pass" if m.get("outcome") == "registered" else "fail")
        before_after = f"v{m.get('champion_before')} → v{m.get('champion_after')}" if m else "-"
        rows.append(f"{e.request_id:<24} {e.kind or '-':<8} {e.state:<11} {path:<28} {gates:<6} {before_after:<22} "
                    f"{(e.reason or '')[:90]}")
    return "\n".join(rows)


@flow(name="deletion_batch", log_prints=True)
def deletion_batch(requests: list[dict[str, Any]] | None = None, batch_id: str | None = None,
                   root: str | None = None) -> dict[str, Any]:
    """Process pending deletion requests. `requests`: request documents (e.g. typed in the Prefect
    UI); inbox files are always picked up. `batch_id`: resume or re-show a given batch."""
    ws = Workspace.at(root)
    ledger = Ledger(ws.ledger_path)
    t0 = time.perf_counter()
    intake = intake_task(str(ws.root), requests)
    batch_id = claim_or_resume(ws, ledger, batch_id)
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
        progress = batch["progress"]
        if "extract" not in progress:
            ledger.record_progress(batch_id, "extract", extract_task(str(ws.root), batch_id))
        extract = ledger.batch(batch_id)["progress"]["extract"]
        record = {"record": extract["record"], "dvc_md5": extract["dvc_md5"],
                  "models_requests": {m: [ledger.get(i).request_id for i in info["ledger_ids"]]
                                      for m, info in extract["models"].items()}}
        t1 = time.perf_counter()
        reports = [process_model(ws, ledger, batch_id, model, info, record) for model, info in extract["models"].items()]
        times = {"intake_and_extract_s": round(t1 - t0, 2), "unlearn_to_register_s": round(time.perf_counter() - t1, 2)}
        cert = certificate(ws, ledger, batch_id, reports, times)
        ledger.record_progress(batch_id, "certificate", cert)
        ledger.close_batch(batch_id, "done" if all(r["outcome"] == "registered" for r in reports) else "failed")
    print(summary_table(ledger, batch_id, intake, reports))
    print(f"certificate: {cert['markdown']} ({cert['outcome']})")
    return {"batch_id": batch_id, "state": ledger.batch(batch_id)["state"], "certificate": cert, "models": reports,
            "intake": intake}


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    deletion_batch()
