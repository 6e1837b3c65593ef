"""The batch's erasure scan over everything a deployment keeps: it fails on the pre-fix state (the
store's superseded version in DVC cache and remote), on copies planted in var/, an MLflow artifact
and data/, and passes once they are collected; data/raw is named, not searched."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.erasure import delete_work_weights, erasure_locations, erasure_scan, erasure_scan_task, forget_samples
from tasks.registry import ensure_experiment
from tasks.versioning import collect_superseded, push, track
from tasks.workspace import Workspace
from tests.flows.conftest import make_repo
from unlearn_ops.data.sources import LOADERS, RawDataset, load_digits
from unlearn_ops.data.store import SampleStore, build_store, row_bytes

MODEL, TEXT = "digits-classifier", "text-classifier"
PARAMS = {"models": {MODEL: {"store_dir": "data/store/digits"}, TEXT: {"store_dir": "data/store/texts"}}}
REVIEWS = [f"Review {i}: a {'warm' if i % 2 else 'cold'}, carefully observed film about family number {i * 7}."
           for i in range(40)]
REVIEWS[35] = REVIEWS[0]  # a snippet in the source twice (Rotten Tomatoes has 55 such groups)


def texts_raw() -> RawDataset:
    x = np.array(REVIEWS, dtype=np.str_)
    return RawDataset("texts", ("neg", "pos"), {"train": (x[:30], np.arange(30) % 2), "test": (x[30:], np.arange(10) % 2)})


@pytest.fixture()
def ws(tmp_path, mlflow_tmp, monkeypatch) -> Workspace:
    monkeypatch.setitem(LOADERS, "texts", texts_raw)  # the text set's "upstream source"
    root = make_repo(tmp_path / "proj", PARAMS)
    for raw, name in ((load_digits(), "digits"), (texts_raw(), "texts")):
        track(root, build_store(raw, root / "data" / "store" / name, max_subject_size=10, rows_per_shard=300).root)
    push(root)
    return Workspace.at(root)


def record(ws: Workspace, batch_id: str, parts: dict[str, list[str]]) -> None:
    models = {}
    for model, ids in parts.items():
        store = ws.store_for(model)
        models[model] = {"dataset": store.name, "sample_ids": sorted(ids), "sha256": store.hashes(sorted(ids))}
    ws.forget_sets.mkdir(parents=True, exist_ok=True)
    (ws.forget_sets / f"{batch_id}.json").write_text(json.dumps({"batch_id": batch_id, "models": models}))


def forget(store: SampleStore, ids: list[str]) -> None:
    store.write_manifest([i for i in store.active_ids() if i not in set(ids)])
    store.purge(ids)


def per_location(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for loc in result["locations"]:
        if loc["n_copies"]:
            out[loc["name"]] = sorted(i for c in loc["copies"] for i in c["sample_ids"])
    return out


def test_scan_fails_on_what_is_still_kept_and_passes_once_collected(ws):
    store = ws.store_for(MODEL)
    subject = sorted(set(store.index.subject_id) - {""})[5]
    ids = sorted(store.subject_ids(subject))
    rows = {i: row_bytes(r) for i, r in zip(ids, store.rows(ids), strict=True)}
    record(ws, "batch-1", {MODEL: ids})
    forget(store, ids)
    track(ws.root, store.root)
    push(ws.root)
    # copies planted where a careless step could leave them
    attempt = ws.runs / "batch-0" / MODEL / "attempt-0-finetune"
    attempt.mkdir(parents=True)
    (attempt / "dump.bin").write_bytes(b"xyz" + rows[ids[0]] + b"tail")
    (ws.runs / "batch-0" / MODEL / "forget_ids.json").write_text(json.dumps({"ids": ids}))
    leaked = ws.root / "leak.bin"
    leaked.write_bytes(rows[ids[1]])
    with mlflow.start_run(experiment_id=ensure_experiment("erasure-test")):
        mlflow.log_artifact(str(leaked), "debug")
    leaked.unlink()
    (ws.root / "data" / "raw").mkdir(parents=True)
    (ws.root / "data" / "raw" / "source.bin").write_bytes(b"".join(rows.values()))  # upstream: out of reach

    result = erasure_scan(ws, "batch-1")
    assert result["content"]["with_content"] == len(ids)  # re-derived from load_digits, hashes checked
    found = per_location(result)
    assert found.pop("DVC cache") == ids and found.pop("DVC remote local") == ids
    assert found.pop("var/ (batch work folders, bench cache)") == [ids[0]]
    assert found.pop("MLflow artifacts") == [ids[1]]
    assert found == {} and not result["passed"] and result["copies"] == 2 * len(ids) + 2
    assert any(n["path"] == "data/raw" for n in result["outside_reach"])

    cli = CliRunner().invoke(app, ["audit", "erasure", "batch-1", "--root", str(ws.root)])
    assert cli.exit_code == 1 and "FAIL" in cli.output and "DVC cache" in cli.output

    samples, _ = forget_samples(ws, "batch-1")
    assert len(collect_superseded(ws.root, samples)["removed"]) == 2
    assert delete_work_weights(ws) == [f"var/batches/batch-0/{MODEL}/attempt-0-finetune"]
    assert (ws.runs / "batch-0" / MODEL / "forget_ids.json").is_file()
    run = mlflow.search_runs(experiment_names=["erasure-test"], output_format="list")[0]
    mlflow.artifacts.get_artifact_repository(run.info.artifact_uri).delete_artifacts("debug")

    cli = CliRunner().invoke(app, ["audit", "erasure", "batch-1", "--root", str(ws.root), "--json"])
    assert cli.exit_code == 0, cli.output
    clean = json.loads(cli.output)
    assert clean["passed"] and clean["copies"] == 0 and clean["expected"] == 0


def test_text_forget_set_is_found_as_strings_and_unicode_rows(ws):
    store = ws.store_for(TEXT)
    ids = store.active_ids()[:2]
    record(ws, "batch-t", {TEXT: ids})
    note = ws.root / "data" / "requests" / "processed" / "note.json"
    note.write_text(json.dumps({"comment": f"about {str(store.rows(ids[1:])[0])}"}))
    assert ids == ["texts/train/000000", "texts/train/000001"]
    data = "data/ (forget-set records, requests, ledger, certificates, audit)"
    before = erasure_scan(ws, "batch-t")
    assert per_location(before)[f"active store ({TEXT})"] == [ids[1]] and per_location(before)[data] == [ids[1]]
    # the twin of ids[0] (texts/test/000005) stays: its copies are named, not counted
    assert before["identical_to_retained"] == {ids[0]: ["texts/test/000005"]}
    forget(store, ids)
    after = erasure_scan(ws, "batch-t")  # contents now come from the "upstream" loader
    assert after["content"]["with_content"] == 2 and after["byte_searchable"] == 2
    found = per_location(after)
    assert f"active store ({TEXT})" not in found and found[data] == [ids[1]]
    assert found["DVC cache"] == [ids[1]]  # the purge is not committed yet: the cache holds the store's version
    store_loc = next(loc for loc in after["locations"] if loc["name"] == f"active store ({TEXT})")
    assert [c["twin_ids"] for c in store_loc["copies"]] == [[ids[0]]]
    other = erasure_scan_task.fn(str(ws.root), "batch-t", models=[MODEL])  # only models whose deletion applied
    assert other["samples"] == 0 and other["models"] == [] and other["passed"]


def test_locations_cover_every_store_each_folder_once(ws):
    locations, notes = erasure_locations(ws)
    paths = [loc.path for loc in locations]
    assert len(paths) == len(set(paths))
    root = ws.root
    for must in (root / "data" / "store" / "digits", root / "data" / "store" / "texts", root / ".dvc" / "cache",
                 root / "dvc-remote", root / "var", root / "data", root):
        assert must in paths, must
    data = next(loc for loc in locations if loc.path == root / "data")
    assert {root / "data" / "raw", root / "data" / "store" / "digits"} <= set(data.exclude)
    assert {n["path"] for n in notes} >= {"data/raw", ".git"}


def test_the_team_stack_folder_is_searched_wherever_it_lies(ws, tmp_path, monkeypatch):
    """A flow run killed inside a TemporaryDirectory leaves staged files in its worker's TMPDIR
    (<stack>/worker-N/tmp); the stack may live outside the project (UNLEARN_STACK_DIR)."""
    store = ws.store_for(MODEL)
    ids = store.active_ids()[:2]
    record(ws, "batch-s", {MODEL: ids})
    stack = tmp_path / "elsewhere" / "stack"
    staged = stack / "worker-1" / "tmp" / "tmpk1lled"
    staged.mkdir(parents=True)
    (staged / "attempt.bin").write_bytes(b"head" + row_bytes(store.rows(ids[:1])[0]))
    (stack / "pg").mkdir()
    (stack / "pg" / "16384").write_bytes(b"\0" * 64 + row_bytes(store.rows(ids[1:])[0]))  # a database page
    forget(store, ids)
    track(ws.root, store.root)
    name = "team stack (server databases, logs, workers' temporary files)"

    monkeypatch.setenv("UNLEARN_STACK_DIR", str(stack))
    [location] = [loc for loc in erasure_locations(ws)[0] if loc.name == name]
    assert location.path == stack and location.live  # a server's files are read, not memory-mapped
    result = erasure_scan(ws, "batch-s")
    assert per_location(result).get(name) == ids and not result["passed"]

    monkeypatch.setenv("UNLEARN_STACK_DIR", str(tmp_path / "never-started"))  # no stack: nothing to name
    assert name not in {loc.name for loc in erasure_locations(ws)[0]}


def test_delete_work_weights_keeps_open_batches(tmp_path):
    ws = Workspace.at(tmp_path)
    for batch in ("batch-a", "batch-b"):
        for folder in ("champion", "attempt-0-retrain", "attempt-1-finetune"):
            (ws.runs / batch / MODEL / folder).mkdir(parents=True)
        (ws.runs / batch / MODEL / "forget_ids.json").write_text("{}")
    removed = delete_work_weights(ws, keep={"batch-b"})
    assert sorted(Path(p).name for p in removed) == ["attempt-0-retrain", "attempt-1-finetune", "champion"]
    assert (ws.runs / "batch-b" / MODEL / "champion").is_dir()
    assert (ws.runs / "batch-a" / MODEL / "forget_ids.json").is_file()
