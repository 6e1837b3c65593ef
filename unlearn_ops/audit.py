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
ATTEMPT_VERDICTS = {"passed": "PASS", "failed": "FAIL", "not_applicable": "NOT APPLICABLE", "error": "ERROR"}


def certificate_markdown(cert: dict[str, Any]) -> str:
    lines = [f"# Unlearning certificate — batch `{cert['batch_id']}`", "",
             f"- Issued: {cert['issued_at']}",
             f"- Outcome: **{cert['outcome']}**", ""]
    lines += ["## Requests", "", "| request | kind | model | state | reason |", "|---|---|---|---|---|"]
    for r in cert["requests"]:
        lines.append(f"| {r['request_id']} | {r.get('kind') or '-'} | {r.get('model') or '-'} | {r['state']} | "
                     f"{(r.get('reason') or '').replace('|', '/')} |")
    for m in cert.get("models", []):
        lines += ["", f"## Model `{m['model']}`", "",
                  f"- Forget set: {m['forget_set']['count']} samples, sha256 `{m['forget_set']['sha256']}`, "
                  f"DVC md5 `{m['forget_set'].get('dvc_md5', '-')}`",
                  f"- Champion before: v{m.get('champion_before') or '-'}; after: v{m.get('champion_after') or '-'}; "
                  f"registered candidate: v{m.get('candidate') or '-'}",
                  f"- Method path: {' → '.join(a['method'] + (' ✓' if a.get('passed') else ' ✗') for a in m['attempts'])}",
                  f"- Active data version (DVC md5): `{m.get('data_dvc_md5') or '-'}`", ""]
        for a in m["attempts"]:
            lines += [f"### Attempt `{a['method']}` — {ATTEMPT_VERDICTS.get(a.get('status'), 'FAIL')} "
                      f"({a.get('seconds', 0):.1f} s)", ""]
            if a.get("status") == "not_applicable":
                lines += [f"Does not apply: {a.get('reason')}", ""]
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
                        lines.append(f"| {kind} | {g['metric']} | {value} | {bound} | {'pass' if g['passed'] else 'FAIL'} |")
                lines.append("")
        for name, path in (m.get("reports") or {}).items():
            lines += [f"![{name}]({path})", ""]
    lines += ["", f"Times: {json.dumps(cert.get('times', {}))}", ""]
    return "\n".join(lines)


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
