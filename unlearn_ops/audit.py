"""Audit certificates and the hash-chained, append-only audit log.

One certificate per batch (JSON, the record, + Markdown, for people). Each certificate's sha256
is appended to `log.jsonl` in an entry that also holds the previous entry's hash, so editing,
removing or reordering any certificate or entry breaks the chain at that point; `verify` finds
the first broken link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unlearn_ops.utils import atomic_write_json, atomic_write_text, canonical_json, sha256_bytes, sha256_file

GENESIS = "0" * 64
ATTEMPT_VERDICTS = {"passed": "PASS", "failed": "FAIL", "not_applicable": "NOT APPLICABLE", "error": "ERROR",
                    "skipped": "SKIPPED", "no_power": "NO POWER"}
PATH_MARKS = {"passed": " ✓", "skipped": " (skipped)", "no_power": " (no power)"}  # anything else: ✗


def _power_line(power: dict[str, Any]) -> str:
    """The batch's power check (the champion judged as its own candidate; docs/verification.md)."""
    shown = "; ".join(f"{group}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(ms.items()) if v is not None)
                      for group, ms in power["metrics"].items())
    sentence = power["sentence"]
    return (f"- {sentence[0].upper()}{sentence[1:]} (measured in {power.get('seconds', 0):.1f} s; "
            f"the champion's metrics — {shown})")


def certificate_markdown(cert: dict[str, Any]) -> str:
    lines = [f"# Unlearning certificate — batch `{cert['batch_id']}`", "",
             f"- Issued: {cert['issued_at']}",
             f"- Outcome: **{cert['outcome']}**", ""]
    lines += ["## Requests", "", "| request | kind | model | state | reason |", "|---|---|---|---|---|"]
    for r in cert["requests"]:
        lines.append(f"| {r['request_id']} | {r.get('kind') or '-'} | {r.get('model') or '-'} | {r['state']} | "
                     f"{(r.get('reason') or '').replace('|', '/')} |")
    approvals = [r for r in cert["requests"] if r.get("approval")]
    if approvals:  # capability removals a person approved (params.yaml `approval`)
        lines += ["", "Approvals:", ""] + [
            f"- `{r['request_id']}`: {'approved' if r['approval']['approve'] else 'denied'} by "
            f"{r['approval']['approver']} at {r['approval']['at']}" + (f": {r['approval']['reason']}"
                                                                       if r['approval'].get('reason') else "")
            for r in approvals]
    for m in cert.get("models", []):
        lines += ["", f"## Model `{m['model']}`", "",
                  f"- Forget set: {m['forget_set']['count']} samples, sha256 `{m['forget_set']['sha256']}`, "
                  f"DVC md5 `{m['forget_set'].get('dvc_md5', '-')}`",
                  f"- Champion before: v{m.get('champion_before') or '-'}; after: v{m.get('champion_after') or '-'}; "
                  f"registered candidate: v{m.get('candidate') or '-'}",
                  f"- Method path: {' → '.join(a['method'] + PATH_MARKS.get(a.get('status'), ' ✗') for a in m['attempts'])}",
                  f"- Active data version (DVC md5): `{m.get('data_dvc_md5') or '-'}`",
                  *([_power_line(m["power"])] if m.get("power") else []),
                  *_retired_lines(m.get("retired") or []), ""]
        if m.get("regressions"):  # an exact model that failed a utility gate: the erasure went ahead
            lines[-1:-1] = [f"- **Promoted with utility regression: {', '.join(m['regressions'])}** (the exact "
                            "method's model: privacy gates decide, utility gates inform)"]
        for a in m["attempts"]:
            lines += [f"### Attempt `{a['method']}` — {ATTEMPT_VERDICTS.get(a.get('status'), 'FAIL')} "
                      f"({a.get('seconds', 0):.1f} s)", ""]
            if a.get("settings"):
                lines += ["Settings: " + ", ".join(f"`{k}: {v}`" for k, v in sorted(a["settings"].items())), ""]
            if a.get("status") == "not_applicable":
                lines += [f"Does not apply: {a.get('reason')}", ""]
            elif a.get("status") == "skipped":
                lines += [f"Not run, it could not pass this batch — skipped: {a.get('reason')}", ""]
            elif a.get("status") == "no_power":
                lines += [f"Not run — {a.get('reason')}", ""]
            elif a.get("reason"):
                lines += [f"Error: `{a['reason']}`", ""]
            if a.get("traceback"):  # a bug in the method, shown in full so it gets fixed
                lines += ["```", a["traceback"].rstrip(), "```", ""]
            if (a.get("details") or {}).get("summary"):  # what the method did, in one sentence
                lines += [f"What it did: {a['details']['summary']}.", ""]
            if a.get("gates"):
                lines += ["| kind | metric | value | bound | result |", "|---|---|---|---|---|"]
                for kind, gates in a["gates"].items():
                    for g in gates["gates"]:
                        bound = " ".join(b for b in (f"≥ {g['min']}" if g["min"] is not None else "",
                                                     f"≤ {g['max']}" if g["max"] is not None else "") if b)
                        value = "missing" if g["value"] is None else f"{g['value']:.4f}"
                        lines.append(f"| {kind} | {g['metric']} | {value} | {bound} | {_gate_result(g)} |")
                lines.append("")
                for kind, gates in a["gates"].items():
                    if gates.get("no_power"):
                        lines += [f"Gates of `{kind}` not decisive for this exact method: {', '.join(gates['no_power'])} "
                                  "— no population test can judge so few samples; the data is forgotten by "
                                  "construction (retrained without it).", ""]
        for name, path in (m.get("reports") or {}).items():
            lines += [f"![{name}]({path})", ""]
    if "erasure" in cert:
        lines += _erasure_lines(cert["erasure"])
    lines += ["", f"Times: {json.dumps(cert.get('times', {}))}", ""]
    return "\n".join(lines)


def _gate_result(g: dict[str, Any]) -> str:
    if g["passed"]:
        return "pass"
    if g.get("utility"):
        return "FAIL (utility)"
    return "FAIL" if g.get("decisive", True) else "not met (not decisive)"


def _retired_lines(retired: list[dict[str, Any]]) -> list[str]:
    """The model's earlier versions, retired: trained on the forgotten data, no longer loadable."""
    if not retired:
        return []
    parts = [f"v{r['version']} (retired by `{r['retired_by']}`"
             + (f"; aliases removed: {', '.join(r['aliases_removed'])}" if r.get("aliases_removed") else "")
             + (f"; weights deleted {r['weights_deleted_at']}" if r.get("weights_deleted_at")
                else f"; weights kept for a rollback until {r['weights_delete_after']}")
             + ")" for r in retired]
    return [f"- Earlier versions retired (trained on the forgotten data; loading one fails): {', '.join(parts)}"]


def _erasure_lines(e: dict[str, Any]) -> list[str]:
    """What the batch erased beyond the active store, and the scan of everything the project keeps."""
    lines = ["", "## Erasure", ""]
    scan = e.get("scan")
    if scan is None:
        lines += ["No deletion was applied in this batch, so nothing was erased: the data stays as it was.", ""]
    else:
        lines += [f"- Erasure scan: **{'PASS' if scan['passed'] else 'FAIL'}** — {scan['copies']} copies of the "
                  f"{scan['samples']} forgotten samples" + (f" and {scan['weight_files']} deleted weight files"
                                                             if scan.get("weight_files") else "")
                  + f" found, {scan['expected']} expected ({scan['seconds']} s; "
                  f"full result `{scan['detail']}`, sha256 `{scan['detail_sha256']}`). Searched by content hash, "
                  f"and by raw bytes for {scan['byte_searchable']} of them.", "",
                  "| location | path | files | copies | not searched |", "|---|---|---|---|---|"]
        lines += [f"| {loc['name']} | `{loc['path']}` | {loc['files'] if loc['exists'] else 'missing'} | "
                  f"{loc['copies']} | {loc['not_searched']} |" for loc in scan["locations"]]
        lines += [""] + [f"- Copy found: `{f['path']}`: " + ("weights of a deleted model version" if f["how"] == "whole file"
                                                              else f"{f['samples']} samples ({f['how']})")
                         for loc in scan["locations"] for f in loc["found"]]
        lines += [f"- {n['path']}: {n['reason']}" for n in scan["outside_reach"]]  # the reason says outside reach
        lines += [f"- Not scanned: {n['path']} — {n['reason']}" for n in scan["not_scanned"]]
    collected = e.get("collected") or {}
    if collected:
        lines.append(f"- Superseded data versions: {len(collected.get('removed', []))} DVC objects holding forgotten "
                     f"samples deleted from the cache and remotes ({collected.get('bytes_freed', 0) / 2**20:.1f} MiB)"
                     + (f"; {len(collected['kept'])} kept: "
                        + "; ".join(f"{k['path']} ({k['reason']})" for k in collected["kept"])
                        if collected.get("kept") else ""))
    expired = {m: v for m, v in (e.get("expired") or {}).items() if v}
    if expired:
        lines.append("- Retired weights deleted, their grace period over: " + ", ".join(
            f"{m} v{x['version']}" for m, vs in expired.items() for x in vs))
    for b in e.get("builds_deleted") or []:
        lines.append(f"- Build output `{b['path']}` deleted from the workspace, the DVC cache and remotes "
                     f"({len(b['removed'])} objects, {b['bytes_freed'] / 2**20:.1f} MiB): it held {b['holds']}; "
                     "the model's build makes it again from the current data (`dvc repro`, or `make build-llm` for "
                     "the language model)")
    if e.get("work_deleted"):
        lines.append(f"- Batch work folders holding pre-deletion weights deleted: {len(e['work_deleted'])}")
    return lines


def write_certificate(cert: dict[str, Any], directory: str | Path) -> tuple[Path, Path, str]:
    directory = Path(directory)
    json_path = directory / f"{cert['batch_id']}.json"
    md_path = directory / f"{cert['batch_id']}.md"
    atomic_write_json(json_path, cert)
    atomic_write_text(md_path, certificate_markdown(cert))
    return json_path, md_path, sha256_file(json_path)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    message: str


class AuditLog:
    """Append-only JSON-lines log; each entry chains the previous entry's hash."""

    def __init__(self, path: str | Path, certificates: str | Path):
        self.path = Path(path)
        self.certificates = Path(certificates)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    @staticmethod
    def _hash(entry: dict[str, Any]) -> str:
        return sha256_bytes(canonical_json({k: v for k, v in entry.items() if k != "entry_hash"}).encode())

    def append(self, batch_id: str, certificate: Path) -> dict[str, Any]:
        entries = self.entries()
        if any(e["batch_id"] == batch_id for e in entries):
            return next(e for e in entries if e["batch_id"] == batch_id)  # idempotent re-run
        entry = {"seq": len(entries), "batch_id": batch_id, "certificate": Path(certificate).name,
                 "certificate_sha256": sha256_file(certificate),
                 "prev": entries[-1]["entry_hash"] if entries else GENESIS,
                 "at": datetime.now(UTC).isoformat(timespec="seconds")}
        entry["entry_hash"] = self._hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # append-only by construction
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry

    def verify(self) -> VerifyResult:
        prev = GENESIS
        entries = self.entries()
        for i, e in enumerate(entries):
            where = f"entry {i} (batch {e.get('batch_id')})"
            if e.get("seq") != i:
                return VerifyResult(False, len(entries), f"{where}: sequence number {e.get('seq')} != {i} (entry removed or reordered)")
            if e.get("prev") != prev:
                return VerifyResult(False, len(entries), f"{where}: does not chain to the previous entry")
            if self._hash(e) != e.get("entry_hash"):
                return VerifyResult(False, len(entries), f"{where}: entry was modified (hash mismatch)")
            cert = self.certificates / e["certificate"]
            if not cert.is_file():
                return VerifyResult(False, len(entries), f"{where}: certificate {cert} is missing")
            if sha256_file(cert) != e["certificate_sha256"]:
                return VerifyResult(False, len(entries), f"{where}: certificate {cert.name} was modified")
            prev = e["entry_hash"]
        return VerifyResult(True, len(entries), f"audit chain OK: {len(entries)} certificates")
