"""Data versions with DVC: forget-set records and the active store after each batch.

A path that is an output of a `dvc.yaml` stage (the build's store) is versioned with
`dvc commit -f <stage>` (dvc.lock then names the new version); any other path with `dvc add`.
Either way its content goes to the DVC cache and, when a remote is configured, is pushed.
Old cache objects (e.g. the store before a purge) stay in the cache until `dvc gc` removes them:
see docs/architecture.md, "Purge and garbage collection".
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import task

log = logging.getLogger(__name__)


class VersioningError(RuntimeError):
    pass


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise VersioningError(f"`dvc {' '.join(args)}` failed in {root}: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def stage_for(root: Path, rel: str) -> str | None:
    """The dvc.yaml stage that declares `rel` as an output, if any."""
    spec = root / "dvc.yaml"
    if not spec.is_file():
        return None
    stages = (yaml.safe_load(spec.read_text()) or {}).get("stages", {})
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            if (out if isinstance(out, str) else next(iter(out))) == rel:
                return name
    return None


def track(root: Path, path: Path) -> str:
    """Version `path`; returns its DVC md5 (the data version recorded in ledger and certificate)."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        raise VersioningError(f"{root} is not a DVC repository: run `dvc init` there (make setup does)")
    rel = Path(path).resolve().relative_to(root).as_posix()
    stage = stage_for(root, rel)
    if stage:
        dvc(root, "commit", "-f", "-q", stage)
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        outs = lock["stages"][stage]["outs"]
        return next(o["md5"] for o in outs if o["path"] == rel)
    dvc(root, "add", "-q", rel)
    meta = yaml.safe_load((root / f"{rel}.dvc").read_text())
    return meta["outs"][0]["md5"]


def push(root: Path) -> bool:
    """Push to the default remote; False (with a log line) when none is configured."""
    config = Path(root) / ".dvc" / "config"
    if "remote =" not in (config.read_text() if config.is_file() else ""):
        log.warning("no default DVC remote configured: versions stay in the local cache only")
        return False
    dvc(Path(root), "push", "-q")
    return True


@task(name="dvc-version", retries=2, retry_delay_seconds=3)
def version_task(root: str, paths: list[str]) -> dict[str, str]:
    versions = {p: track(Path(root), Path(root) / p) for p in paths}
    push(Path(root))
    return versions
