"""Fuzz the request intake: generated hostile documents through the real intake path.

    python -m bench fuzz_intake [--n 10000 | --quick] [--seed 0] [--chunk 100] [--out-dir DIR]

Documents come from `bench.fuzz_mutations` (structure-aware mutations of valid requests, one
family per document in turn, seeded per document). They are dropped into the inbox of a temp
deployment (digits store, `digits-classifier` served; `intake:` limits from params.yaml) `--chunk`
at a time — a few per chunk passed as a flow parameter instead, as the Prefect UI would — and
taken in by `tasks.intake.intake_inbox`, the function the flow's intake task runs: read, parse
within the limits, ledger, Great Expectations facts check, files moved to processed/ or
quarantine/. Counted:

* crashes: an exception escaping the intake (the chunk's documents then each re-run alone to name
  the culprit); must be 0;
* lost: documents without exactly one new ledger row, or inbox files not filed away; must be 0;
* rejections without a reason (ledger row or quarantine `.reason.txt`); must be 0;
* unexpected: a document the generator marked `accept` that was rejected, or `reject` that was
  accepted (a limit that did not trip); must be 0;
* time per document: the parse alone (`parse_request`, per document) and the whole path (per chunk).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.common import OUT_DIR, load_note, load_record, md_table, write_results
from bench.fuzz_mutations import FAMILIES, MODEL, Context, Doc, generate
from flows.params import load_params
from unlearn_ops.request_parsing import IntakeLimits, RequestError

NAME = "fuzz_intake"
PARAMS = {"models": {MODEL: {"store_dir": "data/store/digits"}},
          "policy": {MODEL: {"class": ["retrain"], "samples": ["retrain"], "subject": ["retrain"]}}}


def deployment(root: Path, limits: dict[str, Any]):
    from tasks.workspace import Workspace
    from unlearn_ops.data.sources import load_digits
    from unlearn_ops.data.store import build_store

    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "intake": limits}))
    store = build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10)
    for d in ("inbox", "processed", "quarantine"):
        (root / "data" / "requests" / d).mkdir(parents=True, exist_ok=True)
    train = store.active_ids()
    subjects = sorted(set(store.index.loc[train, "subject_id"]))
    return Workspace.at(root), Context(subjects=subjects, train_ids=train, limits=IntakeLimits.from_params(limits))


def parse_outcome(doc: Doc, limits: IntakeLimits) -> tuple[float, str]:
    """Seconds of the parse alone and its outcome: ok, rejected, or the unforeseen exception's type."""
    from unlearn_ops.requests import parse_request

    t = time.perf_counter()
    try:
        parse_request(doc.payload, limits)
        outcome = "ok"
    except RequestError:
        outcome = "rejected"
    except Exception as e:  # noqa: BLE001 (the intake's safety net catches these; counted here to find them)
        outcome = type(e).__name__
    return time.perf_counter() - t, outcome


def run_chunk(ws, ledger, chunk: list[tuple[int, Doc]]) -> tuple[list[dict[str, Any]], str | None]:
    """Drop a chunk into the inbox (files) and the flow parameter (the rest), take it in, check
    every document's ledger row and filing. Returns one result per document and the crash, if any."""
    from tasks.intake import intake_inbox, source

    files, params = [], []
    for i, doc in chunk:
        if isinstance(doc.payload, bytes):
            name = f"{i:06d}-" + (doc.name or f"{doc.family}.{'yaml' if i % 3 else 'json'}")
            (ws.inbox / name).write_bytes(doc.payload)
            files.append((i, doc, name))
        else:
            params.append((i, doc))
    first = _max_id(ws)
    crash = None
    try:
        checked = intake_inbox(ws, ledger, [d.payload for _, d in params], lambda m: m == MODEL)
    except Exception as e:  # noqa: BLE001 (a crash is what this benchmark counts)
        crash, checked = f"{type(e).__name__}: {str(e)[:200]}", []
    rows = _rows_after(ws, first)
    order = sorted(files, key=lambda f: f[2]) + [(i, d, None) for i, d in params]  # the intake's order
    results = []
    for k, (i, doc, name) in enumerate(order):
        c = checked[k] if k < len(checked) else None
        row = rows.get(c.entry.ledger_id) if c else None
        source_ok = row is not None and (row["source"] == (source("inbox", ws.inbox / name) if name else "parameter"))
        filed = name is None or not (ws.inbox / name).exists()
        reasons = list(ws.quarantine.glob(f"{c.entry.ledger_id:06d}-*.reason.txt")) if c and c.reason and name else []
        results.append({"index": i, "family": doc.family, "variant": doc.variant, "expect": doc.expect,
                        "channel": "file" if name else "parameter", "crashed": crash is not None,
                        "recorded": source_ok, "filed": filed,
                        "state": row["state"] if row else None, "reason": row["reason"] if row else None,
                        "reason_file": bool(reasons) or not (c and c.reason and name)})
    extra_rows = len(rows) - sum(r["recorded"] for r in results)
    if extra_rows:
        results[-1]["extra_rows"] = extra_rows
    for leftover in ws.inbox.iterdir():  # never carry a crashed chunk's files into the next one
        leftover.unlink()
    return results, crash


def _max_id(ws) -> int:
    with sqlite3.connect(ws.ledger_path) as db:
        return db.execute("SELECT COALESCE(MAX(ledger_id), 0) FROM requests").fetchone()[0]


def _rows_after(ws, first: int) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(ws.ledger_path) as db:
        db.row_factory = sqlite3.Row
        return {r["ledger_id"]: dict(r) for r in
                db.execute("SELECT ledger_id, state, reason, source FROM requests WHERE ledger_id > ?", (first,))}


def culprits(ws, chunk: list[tuple[int, Doc]]) -> list[dict[str, Any]]:
    """After a crashed chunk: each document alone on a scratch ledger, to name the ones that crash."""
    from tasks.intake import intake_documents
    from unlearn_ops.ledger import Ledger

    scratch = Ledger(ws.root / "scratch.sqlite")
    found = []
    for i, doc in chunk:
        try:
            intake_documents(ws, scratch, [(doc.payload, f"alone:{i}")], lambda m: m == MODEL)
        except Exception as e:  # noqa: BLE001
            found.append({"index": i, "family": doc.family, "variant": doc.variant, "error": f"{type(e).__name__}: {e}"[:300]})
    return found


def reason_kind(reason: str | None) -> str:
    """A reason with its particulars (quoted values, numbers) blanked, to count reasons by kind."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", reason or "")
    return text.split(";")[0][:70]


def gx_seconds(ws) -> float:
    """One Great Expectations facts check on a one-request frame (the fixed cost per intake)."""
    import pandas as pd

    from tasks.intake import check_facts

    frame = pd.DataFrame([{"ledger_id": 0, "request_id": "gx-probe", "model": MODEL, "kind": "class",
                           "model_served": True, "kind_served": True, "model_registered": True, "target_ok": True,
                           "target_reason": "", "n_samples": 1, "sample_ids": ["x"]}])
    t = time.perf_counter()
    for _ in range(3):
        check_facts(frame)
    return (time.perf_counter() - t) / 3


def summarise(results: list[dict[str, Any]], parse: list[tuple[float, str]], crashes: list[str],
              culprit_list: list[dict[str, Any]], wall: float, gx: float, n_chunks: int) -> dict[str, Any]:
    def ms(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        return {"median": round(1000 * statistics.median(values), 3),
                "p99": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))], 3),
                "max": round(1000 * values[-1], 3)} if values else {}

    def unexpected(r):
        return (r["expect"] == "accept" and r["state"] != "validated") or (r["expect"] == "reject" and r["state"] == "validated")

    families: dict[str, Any] = {}
    for fam in FAMILIES:
        rs = [(r, p) for r, p in zip(results, parse, strict=True) if r["family"] == fam]
        families[fam] = {"documents": len(rs), "accepted": sum(r["state"] == "validated" for r, _ in rs),
                         "rejected": sum(r["state"] == "rejected" for r, _ in rs),
                         "crashes": sum(r["crashed"] for r, _ in rs), "unexpected": sum(unexpected(r) for r, _ in rs),
                         "parse_ms": ms([p[0] for _, p in rs])}
    lost = [r for r in results if not r["recorded"] or not r["filed"]]
    no_reason = [r for r in results if r["state"] == "rejected" and (not r["reason"] or not r["reason_file"])]
    unforeseen = Counter(p[1] for p in parse if p[1] not in ("ok", "rejected"))
    return {
        "documents": len(results), "crashes": sum(r["crashed"] for r in results), "crashed_chunks": crashes,
        "crash_culprits": culprit_list[:20],
        "lost": len(lost), "lost_examples": lost[:10],
        "extra_rows": sum(r.get("extra_rows", 0) for r in results),
        "rejections_without_reason": len(no_reason), "no_reason_examples": no_reason[:10],
        "accepted": sum(r["state"] == "validated" for r in results),
        "rejected": sum(r["state"] == "rejected" for r in results),
        "unexpected": sum(unexpected(r) for r in results),
        "unexpected_examples": [r for r in results if unexpected(r)][:20],
        "unforeseen_exceptions": dict(unforeseen),
        "parameter_documents": sum(r["channel"] == "parameter" for r in results),
        "families": families,
        "reasons": Counter(reason_kind(r["reason"]) for r in results if r["state"] == "rejected").most_common(25),
        "time": {"parse_ms": ms([p[0] for p in parse]), "wall_s": round(wall, 1),
                 "full_path_ms_per_document": round(1000 * wall / max(len(results), 1), 2),
                 "chunks": n_chunks, "gx_check_s": round(gx, 2)},
    }


def markdown(p: dict[str, Any]) -> str:
    s, t = p["summary"], p["summary"]["time"]
    verdict = "PASS" if not (s["crashes"] or s["lost"] or s["rejections_without_reason"] or s["unexpected"]) else "FAIL"
    lines = [
        f"**{verdict}**: {s['documents']} documents (seed {p['seed']}), **{s['crashes']} crashes, {s['lost']} lost, "
        f"{s['rejections_without_reason']} rejections without a reason, {s['unexpected']} unexpected outcomes**; "
        f"{s['accepted']} accepted, {s['rejected']} rejected; {s['parameter_documents']} came as a flow parameter, "
        "the rest as inbox files.", "",
        f"Time per document: parse alone median {t['parse_ms']['median']} ms, p99 {t['parse_ms']['p99']} ms, "
        f"max {t['parse_ms']['max']} ms; the whole intake path (read, parse, ledger, GX facts check, filing) "
        f"{t['full_path_ms_per_document']} ms per document in chunks of {p['chunk']} ({t['chunks']} chunks, "
        f"{t['wall_s']} s), of which one Great Expectations check costs ≈ {t['gx_check_s']} s per chunk. "
        f"{p['load_note']}.", "",
        "## Per mutation family", "",
        md_table(["family", "documents", "accepted", "rejected", "crashes", "unexpected", "parse ms median / p99 / max"],
                 [[f, v["documents"], v["accepted"], v["rejected"], v["crashes"], v["unexpected"],
                   f"{v['parse_ms'].get('median', '-')} / {v['parse_ms'].get('p99', '-')} / {v['parse_ms'].get('max', '-')}"]
                  for f, v in s["families"].items()]), "",
        "`unexpected`: a document its generator marked *accept* (a valid request, however encoded) that was "
        "rejected, or marked *reject* (over a limit, against a rule, or no request at all) that was accepted. "
        "Mutations that may or may not leave a valid request (a truncation after the last field, a wrong type "
        "pydantic converts) are marked *any* and only counted.", "",
        "## Rejection reasons (particulars blanked as …)", "",
        md_table(["reason", "documents"], [[f"`{k}`", v] for k, v in s["reasons"]]), "",
        "## Limits in force (params.yaml `intake:`)", "",
        md_table(["limit", "value"], [[k, v] for k, v in p["limits"].items()]), "",
        "## What was run", "",
        f"`python -m bench fuzz_intake --n {s['documents']} --seed {p['seed']} --chunk {p['chunk']}`: "
        "documents from `bench/fuzz_mutations.py` (one family per document in turn, each seeded by "
        "(seed, index), so a slice is the same documents as the full run) into the inbox of a temp "
        "deployment, taken in by `tasks.intake.intake_inbox` (what the flow's intake task runs). "
        "CI runs 300 of them (tests/bench/test_fuzz_intake.py).",
    ]
    if s["unforeseen_exceptions"]:
        lines += ["", f"Exceptions outside RequestError in the parse (caught by the intake's safety net, "
                      f"rejected with their type): {s['unforeseen_exceptions']}"]
    for key in ("crash_culprits", "lost_examples", "no_reason_examples", "unexpected_examples"):
        if s[key]:
            lines += ["", f"### {key.replace('_', ' ')}", "", "```", *[str(x)[:300] for x in s[key]], "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog=f"python -m bench {NAME}")
    p.add_argument("--n", type=int, default=10_000, help="documents to generate (default 10 000)")
    p.add_argument("--quick", action="store_true", help="300 documents (the CI slice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100, help="documents per intake call (one inbox sweep)")
    p.add_argument("--out-dir", default=None)
    a = p.parse_args(argv)
    n = 300 if a.quick else a.n
    limits = dict(load_params().get("intake") or {})
    with tempfile.TemporaryDirectory(prefix="fuzz-intake-") as tmp:
        from unlearn_ops.ledger import Ledger

        ws, ctx = deployment(Path(tmp), limits)
        ledger = Ledger(ws.ledger_path)
        results, parse, crashes, culprit_list, wall = [], [], [], [], 0.0
        for start in range(0, n, a.chunk):
            chunk = [(i, generate(i, a.seed, ctx)) for i in range(start, min(n, start + a.chunk))]
            parse += [parse_outcome(doc, ctx.limits) for _, doc in chunk]
            t = time.perf_counter()
            chunk_results, crash = run_chunk(ws, ledger, chunk)
            wall += time.perf_counter() - t  # the intake path only: not the generation, not the parse timing
            results += chunk_results
            if crash:
                crashes.append(f"chunk {start}: {crash}")
                culprit_list += culprits(ws, chunk)
            print(f"{min(n, start + a.chunk)}/{n} documents, {sum(r['crashed'] for r in results)} crashes", flush=True)
        gx = gx_seconds(ws)
    payload = {"seed": a.seed, "chunk": a.chunk, "quick": a.quick, "limits": {**IntakeLimits().__dict__, **limits},
               "load": load_record(), "summary": summarise(results, parse, crashes, culprit_list, wall, gx,
                                                           -(-n // a.chunk))}
    payload["load_note"] = load_note(payload["load"])
    write_results(NAME, payload, markdown(payload), Path(a.out_dir) if a.out_dir else OUT_DIR)
    s = payload["summary"]
    print(f"{s['documents']} documents: {s['crashes']} crashes, {s['lost']} lost, {s['rejections_without_reason']} "
          f"without reason, {s['unexpected']} unexpected; parse median {s['time']['parse_ms']['median']} ms")
    return payload
