"""The end of a batch: its certificate (JSON + Markdown, appended to the hash-chained audit log)
and the one-line-per-request summary the flow prints."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.approval import decision_of
from tasks.batch import ModelReport
from tasks.workspace import Workspace
from unlearn_ops.audit import AuditLog, write_certificate
from unlearn_ops.ledger import Ledger


def copy_figures(ws: Workspace, batch_id: str, model: str, reports: dict[str, str]) -> dict[str, str]:
    """The final attempt's plots, copied beside the certificate that embeds them; their paths
    relative to the certificates folder."""
    figures = ws.certificates / batch_id
    figures.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, src in reports.items():
        dst = figures / f"{model}-{Path(src).name}"
        shutil.copy2(src, dst)
        out[name] = str(dst.relative_to(ws.certificates))
    return out


def issue_certificate(ws: Workspace, ledger: Ledger, batch_id: str, models: list[ModelReport],
                      times: dict[str, float]) -> dict[str, Any]:
    """Write the certificate and append its hash to the audit log."""
    entries = ledger.entries(batch_id=batch_id)
    outcome = "REGISTERED" if models and all(m.outcome == "registered" for m in models) else (
        "NOTHING TO DO" if not models else "FAILED")
    cert = {"batch_id": batch_id, "issued_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcome": outcome, "models": [m.to_dict() for m in models], "times": times,
            "requests": [{"request_id": e.request_id, "kind": e.kind, "model": e.model, "state": e.state,
                          "reason": e.reason, "received_at": e.received_at, "approval": decision_of(ledger, e)}
                         for e in entries]}
    json_path, md_path, digest = write_certificate(cert, ws.certificates)
    AuditLog(ws.audit_log, ws.certificates).append(batch_id, json_path)
    return {"json": str(json_path), "markdown": str(md_path), "sha256": digest, "outcome": outcome}


def summary_table(ledger: Ledger, batch_id: str | None, intake: list[dict[str, Any]],
                  models: list[ModelReport]) -> str:
    """One line per request: state, method path, gate result, champion before → after, reason."""
    by_model = {m.model: m for m in models}
    rows = [f"{'request':<24} {'kind':<8} {'state':<11} {'method (path)':<28} {'gates':<6} champion before→after  reason"]
    seen = set()
    entries = ledger.entries(batch_id=batch_id) if batch_id else []
    intake_only = [ledger.find(r["request_id"])[-1] for r in intake if r["state"] == "rejected"]
    for e in entries + intake_only:
        if e.ledger_id in seen:
            continue
        seen.add(e.ledger_id)
        m = by_model.get(e.model or "")
        path = " → ".join(a["method"] for a in m.attempts) if m else "-"
        gates = "-" if not m else ("pass" if m.outcome == "registered" else "fail")
        before_after = f"v{m.champion_before} → v{m.champion_after}" if m else "-"
        rows.append(f"{e.request_id:<24} {e.kind or '-':<8} {e.state:<11} {path or '-':<28} {gates:<6} "
                    f"{before_after:<22} {(e.reason or '')[:90]}")
    return "\n".join(rows)
