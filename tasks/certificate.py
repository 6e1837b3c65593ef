"""The end of a batch: its certificate (JSON + Markdown; the erasure scan's result in it),
appended once to the hash-chained audit log, and the one-line-per-request summary the flow prints."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.approval import decision_of
from tasks.batch import Erasure, ModelReport
from tasks.workspace import Workspace
from unlearn_ops.audit import AuditLog, write_certificate
from unlearn_ops.ledger import Ledger
from unlearn_ops.utils import atomic_write_json, sha256_file


def copy_figures(ws: Workspace, batch_id: str, model: str, reports: dict[str, str]) -> dict[str, str]:
    """The final attempt's plots, copied beside the certificate that embeds them; their paths
    relative to the certificates folder. A copy already there is kept (a resumed batch may have
    deleted the attempt folders since)."""
    figures = ws.certificates / batch_id
    figures.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in reports.items():
        dst = figures / f"{model}-{Path(src).name}"
        if not dst.is_file():
            shutil.copy2(src, dst)
        out[name] = str(dst.relative_to(ws.certificates))
    return out


def erasure_summary(ws: Workspace, batch_id: str, result: dict[str, Any]) -> dict[str, Any]:
    """The scan's result as the certificate shows it: copies per location, 0 expected, what was
    not scanned and what is outside reach. The full result (every file not searched, every
    copy's IDs) goes to `<certificates>/<batch>/erasure-scan.json`, named with its sha256."""
    detail = ws.certificates / batch_id / "erasure-scan.json"
    atomic_write_json(detail, result)
    locations = [{"name": loc["name"], "path": loc["path"], "exists": loc["exists"], "files": loc["files"],
                  "copies": loc["n_copies"], "not_searched": len(loc["skipped"]),
                  "found": [{"path": c["path"], "samples": len(c["sample_ids"]), "how": c["how"]}
                            for c in loc["copies"] if c["sample_ids"]]}
                 for loc in result["locations"]]
    return {"passed": result["passed"], "copies": result["copies"], "expected": result["expected"],
            "samples": result["samples"], "weight_files": len(result.get("files_searched_for", [])),
            "byte_searchable": result["byte_searchable"],
            "hash_only": len(result["unsearchable"]), "identical_to_retained": len(result["identical_to_retained"]),
            "locations": locations, "not_scanned": result["not_scanned"], "outside_reach": result["outside_reach"],
            "seconds": result["seconds"], "detail": str(detail.relative_to(ws.certificates)),
            "detail_sha256": sha256_file(detail)}


def issue_certificate(ws: Workspace, ledger: Ledger, batch_id: str, models: list[ModelReport],
                      erasure: Erasure, times: dict[str, float]) -> dict[str, Any]:
    """Write the certificate (JSON, the record, + Markdown). REGISTERED only when every model's
    deletion was applied and the erasure scan found no copy left."""
    entries = ledger.entries(batch_id=batch_id)
    registered = bool(models) and all(m.outcome == "registered" for m in models)
    outcome = ("NOTHING TO DO" if not models else "FAILED" if not registered else
               "REGISTERED" if erasure.scan and erasure.scan["passed"] else "REGISTERED, ERASURE INCOMPLETE")
    cert = {"batch_id": batch_id, "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcome": outcome, "models": [m.to_dict() for m in models], "erasure": erasure.to_dict(), "times": times,
            "requests": [{"request_id": e.request_id, "kind": e.kind, "model": e.model, "state": e.state,
                          "reason": e.reason, "received_at": e.received_at, "approval": decision_of(ledger, e)}
                         for e in entries]}
    json_path, md_path, digest = write_certificate(cert, ws.certificates)
    return {"json": str(json_path), "markdown": str(md_path), "sha256": digest, "outcome": outcome}


def append_to_audit(ws: Workspace, batch_id: str, cert: dict[str, Any]) -> dict[str, Any]:
    """The certificate's hash, chained into the audit log, at most once per batch. The file must
    still be the one the batch recorded: a certificate is never re-issued after it was written."""
    path = Path(cert["json"])
    if sha256_file(path) != cert["sha256"]:
        raise RuntimeError(f"{path} is not the certificate batch {batch_id} issued (sha256 differs): not appended")
    return AuditLog(ws.audit_log, ws.certificates).append(batch_id, path)


WAITING = ("validated", "approved")  # accepted, in no batch yet: the next run's claim takes them


def outcome_rows(ledger: Ledger, batch_id: str | None, intake: list[dict[str, Any]],
                 models: list[ModelReport]) -> list[dict[str, str]]:
    """One row per request of the batch and of this run's intake: state, method path, gate result,
    champion before → after, reason (what the printed summary and the run's table artifact show)."""
    by_model = {m.model: m for m in models}
    rows, seen = [], set()
    entries = ledger.entries(batch_id=batch_id) if batch_id else []
    intake_only = [ledger.find(r["request_id"])[-1] for r in intake]
    for e in entries + intake_only:
        if e.ledger_id in seen:
            continue
        seen.add(e.ledger_id)
        m = by_model.get(e.model or "") if e.batch_id == batch_id else None
        path = " → ".join(a["method"] for a in m.attempts) if m else "-"
        reason = e.reason or ("queued for the next run" if e.state in WAITING else "")
        rows.append({"request": e.request_id, "model": e.model or "-", "kind": e.kind or "-", "state": e.state,
                     "batch": e.batch_id or "-", "method (path)": path or "-",
                     "gates": "-" if not m else ("pass" if m.outcome == "registered" else "fail"),
                     "champion": f"v{m.champion_before} → v{m.champion_after}" if m else "-", "reason": reason})
    return rows


def summary_table(ledger: Ledger, batch_id: str | None, intake: list[dict[str, Any]],
                  models: list[ModelReport]) -> str:
    """One line per request: state, method path, gate result, champion before → after, reason."""
    lines = [f"{'request':<24} {'kind':<8} {'state':<11} {'method (path)':<28} {'gates':<6} champion before→after  reason"]
    for r in outcome_rows(ledger, batch_id, intake, models):
        lines.append(f"{r['request']:<24} {r['kind']:<8} {r['state']:<11} {r['method (path)']:<28} {r['gates']:<6} "
                     f"{r['champion']:<22} {r['reason'][:90]}")
    return "\n".join(lines)
