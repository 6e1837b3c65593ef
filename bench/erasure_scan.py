"""Erasure scan and superseded-version collection on a Fashion-MNIST deployment (docs/erasure.md).

A temp DVC project with the sharded fmnist store (committed and pushed to its own remote), four
pre-shard 52 MiB payload versions in its cache (the state main left after a few batches), then a
subject (18 samples) and a class (6 000 samples) forgotten and committed. Measured: the scan of
everything the project keeps before collection (it must find the copies), `collect_superseded`,
and the scan after it (0 expected). Run: `python -m bench erasure_scan` (≈ 30 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import md_table, write_results
from tasks.env import project_root

NAME = "erasure_scan"
LEGACY_VERSIONS = 4


def _dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True)


def deployment(root: Path) -> dict[str, list[str]]:
    """Build the project in `root`; returns batch id -> forgotten IDs (records written, purged, committed)."""
    from tasks.versioning import push, track
    from unlearn_ops.data.sources import load_fashion_mnist
    from unlearn_ops.data.store import build_store
    from unlearn_ops.utils import atomic_save_npy, atomic_write_json

    _dvc(root, "init", "--no-scm", "-q")
    with open(root / ".dvc" / "config", "a") as f:
        f.write("    remote = local\n['remote \"local\"']\n    url = ../var/dvc-remote\n")
    raw_dir = project_root() / "data" / "raw" / "fashion-mnist"
    (root / "params.yaml").write_text(yaml.safe_dump({
        "data": {"dataset": "fmnist", "raw_dir": str(raw_dir)},
        "models": {"fmnist-classifier": {"store_dir": "data/store/fmnist"}}}))
    store = build_store(load_fashion_mnist(raw_dir), root / "data" / "store" / "fmnist")
    track(root, store.root)
    push(root)
    full = store.payload()
    for k in range(LEGACY_VERSIONS):  # what a pre-shard store left in the cache: whole payload.npy versions
        atomic_save_npy(root / ".dvc" / "cache" / "files" / "md5" / f"{k:02x}" / ("e" * 30), full)
    batches = {"batch-subject": store.subject_ids("subj-00007"), "batch-class": store.class_ids(3)}
    for batch, ids in batches.items():
        atomic_write_json(root / "data" / "forget_sets" / f"{batch}.json", {"batch_id": batch, "models": {
            "fmnist-classifier": {"dataset": "fmnist", "sample_ids": ids, "sha256": store.hashes(ids)}}})
    store.purge([i for ids in batches.values() for i in ids])
    track(root, store.root)
    push(root)
    return batches


def measure(root: Path, batches: dict[str, list[str]]) -> dict[str, Any]:
    from tasks.erasure import erasure_scan, forget_samples
    from tasks.versioning import collect_superseded
    from tasks.workspace import Workspace

    ws = Workspace.at(root)
    erasure_scan(ws, "batch-subject")  # warm-up: imports, the raw data's first read
    rows = []
    for phase in ("before", "collect", "after"):
        for batch in batches:
            t0 = time.perf_counter()
            if phase == "collect":
                samples, _ = forget_samples(ws, batch)
                c = collect_superseded(root, samples)
                rows.append({"phase": phase, "batch": batch, "samples": len(samples), "seconds": time.perf_counter() - t0,
                             "removed": len(c["removed"]), "mib_freed": c["bytes_freed"] / 2**20})
                continue
            r = erasure_scan(ws, batch)
            rows.append({"phase": phase, "batch": batch, "samples": r["samples"], "seconds": time.perf_counter() - t0,
                         "copies": r["copies"], "passed": r["passed"], "files": sum(x["files"] for x in r["locations"]),
                         "mib": sum(x["bytes"] for x in r["locations"]) / 2**20,
                         "per_location": {x["name"]: x["n_copies"] for x in r["locations"] if x["n_copies"]}})
    return {"rows": rows, "legacy_versions": LEGACY_VERSIONS}


def markdown(payload: dict[str, Any]) -> str:
    scans = [r for r in payload["rows"] if r["phase"] != "collect"]
    collects = [r for r in payload["rows"] if r["phase"] == "collect"]
    out = [__doc__.split("\n\n")[1], "", "Scans (wall clock, one process, after a warm-up scan):", "",
           md_table(["phase", "batch", "samples", "files", "MiB searched", "seconds", "copies", "passed", "where"],
                    [[r["phase"], r["batch"], r["samples"], r["files"], f"{r['mib']:.0f}", f"{r['seconds']:.1f}",
                      r["copies"], r["passed"], json.dumps(r["per_location"])] for r in scans]),
           "", "Collection (`collect_superseded`: scan of DVC cache + remote, then deletion):", "",
           md_table(["batch", "seconds", "objects removed", "MiB freed"],
                    [[r["batch"], f"{r['seconds']:.1f}", r["removed"], f"{r['mib_freed']:.0f}"] for r in collects])]
    return "\n".join(out)


def main(argv: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="erasure-bench-") as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        batches = deployment(root)
        payload = measure(root, batches)
    write_results(NAME, payload, markdown(payload))
    print(markdown(payload))
    return payload
