"""Data versions with DVC: forget-set records and the active store after each batch.

A path that is an output of a `dvc.yaml` stage (the build's store) is versioned with
`dvc commit -f <stage>` (dvc.lock then names the new version); any other path with `dvc add`.
Either way its content goes to the DVC cache and, when a remote is configured, is pushed.

A purge supersedes the store's shards that held the forgotten rows; `collect_superseded` then
deletes exactly the cache and remote objects the erasure scan finds holding forgotten content
(never one the current version uses), so the history of other data survives: docs/erasure.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from prefect import task

from unlearn_ops.erasure import Location, Sample, scan

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


def push(root: Path, paths: Sequence[str] = ()) -> bool:
    """Push `paths` (a batch pushes what it just versioned, not every output: a stage never built,
    or one whose version was deleted on purpose, would warn on every push; none: everything) to the
    default remote; False (with a log line) when none is configured."""
    config = Path(root) / ".dvc" / "config"
    if "remote =" not in (config.read_text() if config.is_file() else ""):
        log.warning("no default DVC remote configured: versions stay in the local cache only")
        return False
    dvc(Path(root), "push", "-q", *(target(Path(root), p) for p in paths))
    return True


def target(root: Path, rel: str) -> str:
    """How DVC commands should name `rel`: its .dvc file when `dvc add` made one. By its output path
    DVC looks the data up in the repository's index, which skips what git ignores: under the
    project's .gitignore (`/data/store/*`, `!/data/store/*.dvc`) `dvc push data/store/facts` found
    no such output and `make demo-llm` failed after verifying its request."""
    return f"{rel}.dvc" if (root / f"{rel}.dvc").is_file() else rel


@task(name="dvc-version", retries=2, retry_delay_seconds=3)
def version_task(root: str, paths: list[str]) -> dict[str, str]:
    versions = {p: track(Path(root), Path(root) / p) for p in paths}
    push(Path(root), paths)
    return versions


# ------------------------------------------------------------------ where DVC keeps data
@dataclass(frozen=True)
class DvcStorage:
    cache: Path                                            # the local cache (`.dvc/cache` unless configured)
    remotes: dict[str, Path] = field(default_factory=dict)  # remotes that are local folders
    elsewhere: dict[str, str] = field(default_factory=dict)  # other remotes: name -> url
    site_cache: Path | None = None                        # DVC's indexes for this repo (outside it)


def dvc_storage(root: Path) -> DvcStorage:
    """Cache and remotes as DVC itself resolves them (a relative remote url is relative to the
    config file's folder, `.dvc/`, not to the project)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes, elsewhere = {}, {}
        for name, conf in repo.config["remote"].items():
            url = str(conf["url"])
            if urlparse(url).scheme in ("", "file"):
                remotes[name] = Path(urlparse(url).path if url.startswith("file:") else url)
            else:
                elsewhere[name] = url
        return DvcStorage(Path(repo.cache.local_cache_dir), remotes, elsewhere, Path(repo.site_cache_dir))


def used_objects(root: Path, skip: str | None = None) -> set[str]:
    """md5s of every object the current workspace version needs (directory manifests expanded);
    `skip`: but not those of this output (a project-relative path)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.tree import Tree

    with Repo(str(root)) as repo:
        used: set[str] = set()
        for out in repo.index.outs:
            if (skip is not None and out.def_path == skip) or not out.use_cache or not out.hash_info:
                continue  # skipped, not cached (metrics), or never built (no version to keep)
            if out.hash_info.isdir and not repo.cache.local.exists(out.hash_info.value):
                continue  # a deleted version's manifest: nothing of it is left to keep
            for objs in out.get_used_objs(force=True).values():
                for h in objs:
                    used.add(h.value)
                    if h.isdir:
                        used.update(hi.value for _, _, hi in Tree.load(repo.cache.local, h))
        return used


def dvc_outputs(root: Path) -> list[str]:
    """Project-relative paths of every cached DVC output (stage `outs` and `dvc add`ed data)."""
    if not (Path(root) / ".dvc").is_dir():
        return []
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted({out.def_path for out in repo.index.outs if out.use_cache})


def delete_output(root: Path, rel: str) -> dict[str, Any]:
    """Delete an output (a stage's `outs` path, or any project folder) from the workspace, the DVC
    cache and every local remote, keeping any object another output still uses. Its stage then shows as
    changed, and `dvc repro` rebuilds it from the current data; the old version is unrestorable
    on purpose (it held weights trained on forgotten data: docs/erasure.md)."""
    from dvc.repo import Repo

    root = Path(root)
    folder = root / rel
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()] if folder.is_dir() else (
        [folder] if folder.is_file() else [])
    removed: list[dict[str, str]] = []
    freed = 0
    if not (root / ".dvc").is_dir():
        _remove(folder)
        return {"path": rel, "files": len(files), "removed": removed, "bytes_freed": freed, "remotes_not_collected": {}}
    objects = {md5_file(p) for p in files}  # DVC 3 names a file's object by the md5 of its bytes
    storage = dvc_storage(root)
    with Repo(str(root)) as repo:
        out = next((o for o in repo.index.outs if o.def_path == rel), None)
        if out is not None and out.hash_info and out.hash_info.value:
            objects.add(out.hash_info.value)  # the folder's `.dir` manifest, as dvc.lock names it
        odbs = {"DVC cache": repo.cache.local}
        odbs.update({f"DVC remote {n}": repo.cloud.get_remote_odb(n, hash_name="md5") for n in storage.remotes})
        objects -= used_objects(root, skip=rel)
        for where, odb in odbs.items():
            for oid in sorted(objects):
                path = Path(odb.oid_to_path(oid))
                if path.is_file():
                    freed += path.stat().st_size
                    path.unlink()
                    removed.append({"location": where, "path": str(path), "md5": oid})
    _remove(folder)
    if any(e["location"] != "DVC cache" for e in removed):
        _forget_remote_indexes(root, storage)
    log.info("deleted DVC output %s: %d files, %d objects (%d bytes)", rel, len(files), len(removed), freed)
    return {"path": rel, "files": len(files), "removed": removed, "bytes_freed": freed,
            "remotes_not_collected": storage.elsewhere}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _object_id(path: Path) -> str | None:
    """`…/files/md5/ab/cdef…` (or DVC 2's `…/ab/cdef…`) -> `abcdef…`; None for anything else."""
    head, tail = path.parent.name, path.name
    oid = head + tail
    if len(head) == 2 and len(oid) == 32 and all(ch in "0123456789abcdef" for ch in oid):
        return oid
    return None


def collect_superseded(root: Path, samples: Sequence[Sample]) -> dict[str, Any]:
    """Delete from the DVC cache and every local remote the objects that hold forgotten content.

    Driven by the erasure scan: an object is deleted only if the scan finds a forgotten sample in
    it and the current workspace version does not use it (a purge not yet committed keeps its
    objects, and the call says so). The `.dir` manifests of the old store versions then name
    objects that are gone: those versions are unrestorable on purpose (docs/erasure.md)."""
    root = Path(root)
    storage = dvc_storage(root)
    places = {"DVC cache": storage.cache, **{f"DVC remote {n}": p for n, p in storage.remotes.items()}}
    result = scan(samples, [Location(name, path) for name, path in places.items()])
    in_use = used_objects(root)
    removed, kept, freed = [], [], 0
    for loc in result["locations"]:
        for copy in loc["copies"]:
            path = Path(copy["file"])
            oid = _object_id(path)
            entry = {"location": loc["name"], "path": str(path), "md5": oid, "sample_ids": copy["sample_ids"]}
            if oid is None or oid in in_use:
                kept.append({**entry, "reason": "not a DVC object" if oid is None else
                             "used by the current version (purge and `dvc commit` first)"})
                continue
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
            removed.append(entry)
    if any(e["location"] != "DVC cache" for e in removed):
        _forget_remote_indexes(root, storage)
    log.info("collected %d superseded DVC objects holding forgotten samples (%d bytes)", len(removed), freed)
    return {"removed": removed, "kept": kept, "bytes_freed": freed,
            "remotes_not_collected": storage.elsewhere}


def _forget_remote_indexes(root: Path, storage: DvcStorage) -> None:
    """DVC remembers what a remote holds; after deleting there, clear that memory (as `dvc gc -c`)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.db import get_index

    with Repo(str(root)) as repo:
        for name in storage.remotes:
            get_index(repo.cloud.get_remote_odb(name, hash_name="md5")).clear()
