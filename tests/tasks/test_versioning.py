"""DVC storage: the project's remote is its own var/dvc-remote, and `collect_superseded` deletes
exactly the cache / remote objects that hold forgotten samples — the pre-fix state (a purged store
whose old version still holds the subject) is built on purpose so the scan is seen to fail first."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.versioning import (
    VersioningError,
    collect_superseded,
    delete_output,
    dvc_storage,
    md5_file,
    push,
    track,
    used_objects,
)
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store, row_bytes
from unlearn_ops.erasure import Location, Sample, scan
from unlearn_ops.utils import sha256_bytes

ROOT = Path(__file__).resolve().parents[2]


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_project_remote_resolves_inside_the_project():
    storage = dvc_storage(ROOT)
    assert storage.remotes == {"local": ROOT / "var" / "dvc-remote"}
    assert "var/dvc-remote" in (ROOT / "Makefile").read_text().split("\nclean:")[1].split("\n")[1]


@pytest.fixture()
def repo(tmp_path):
    """A DVC project like ours (remote `../var/dvc-remote` in .dvc/config): a store, and other data
    in two versions, all pushed."""
    root = tmp_path / "proj"
    root.mkdir()
    dvc(root, "init", "--no-scm", "-q")
    # the project's own remote section, verbatim: its relative url must land inside the project
    section = (ROOT / ".dvc" / "config").read_text().split("['remote \"local\"']")[1]
    with open(root / ".dvc" / "config", "a") as f:
        f.write("    remote = local\n['remote \"local\"']" + section)
    store = build_store(load_digits(), root / "data" / "store" / "digits", max_subject_size=10, rows_per_shard=300)
    notes = root / "data" / "notes.txt"
    notes.write_text("version one of some other data\n")
    track(root, notes)
    push(root)
    notes.write_text("version two of some other data\n")
    track(root, notes)
    track(root, store.root)
    assert push(root)
    return root, store


def forget_subject(store):
    subject = sorted(set(store.index.subject_id) - {""})[3]
    ids = store.subject_ids(subject)
    samples = [Sample(i, sha256_bytes(row_bytes(r)), row_bytes(r)) for i, r in zip(ids, store.rows(ids), strict=True)]
    store.write_manifest([i for i in store.active_ids() if i not in set(ids)])
    store.purge(ids)
    return ids, samples


def objects(folder: Path) -> set[str]:
    return {p.parent.name + p.name for p in (folder / "files" / "md5").glob("*/*")}


def test_collect_superseded_removes_exactly_the_objects_holding_the_subject(repo):
    root, store = repo
    storage = dvc_storage(root)
    assert storage.remotes["local"] == root / "var" / "dvc-remote"
    ids, samples = forget_subject(store)
    track(root, store.root)
    push(root)
    before_cache, before_remote = objects(storage.cache), objects(storage.remotes["local"])

    # the pre-fix state: active store clean, its superseded version in cache and remote is not
    places = [Location("store", store.root), Location("cache", storage.cache),
              Location("remote", storage.remotes["local"])]
    found = scan(samples, places)
    per = {loc["name"]: loc for loc in found["locations"]}
    assert per["store"]["n_copies"] == 0
    for name in ("cache", "remote"):
        (copy,) = per[name]["copies"]  # one shard object, and it holds exactly the subject
        assert copy["sample_ids"] == sorted(ids)
    assert not found["passed"]

    result = collect_superseded(root, samples)
    assert len(result["removed"]) == 2 and result["kept"] == [] and result["bytes_freed"] > 0
    gone = {e["md5"] for e in result["removed"]}
    assert len(gone) == 1
    assert objects(storage.cache) == before_cache - gone and objects(storage.remotes["local"]) == before_remote - gone
    assert scan(samples, places)["passed"]

    # the current version is whole: DVC sees nothing to do, and a lost workspace comes back
    assert not gone & used_objects(root)
    assert "up to date" in dvc(root, "status") and "in sync" in dvc(root, "status", "-c")
    payload_before = store.payload()
    shutil.rmtree(store.root)
    dvc(root, "checkout", "-q", "data/store/digits")
    assert (store.payload() == payload_before).all()
    assert (root / "data" / "notes.txt").read_text() == "version two of some other data\n"


def test_history_of_other_data_survives(repo):
    root, store = repo
    storage = dvc_storage(root)
    _, samples = forget_subject(store)
    track(root, store.root)
    push(root)
    before = objects(storage.cache)
    result = collect_superseded(root, samples)
    survivors = before - {e["md5"] for e in result["removed"]}
    assert len(survivors) == len(before) - 1  # the old notes.txt, old index.csv, other shards: all kept
    old_notes = md5_of(b"version one of some other data\n")
    assert old_notes in survivors and old_notes in objects(storage.remotes["local"])


def test_collect_never_touches_objects_the_current_version_uses(repo):
    root, store = repo
    _, samples = forget_subject(store)  # purged, but not committed: dvc.lock still names the old shard
    result = collect_superseded(root, samples)
    assert result["removed"] == []
    assert {k["reason"] for k in result["kept"]} == {"used by the current version (purge and `dvc commit` first)"}


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_delete_output_removes_a_stage_output_everywhere_and_keeps_what_others_use(repo):
    """A build output trained on forgotten data goes from workspace, cache and remote; an object
    another output uses stays, and pushes after it do not trip over the deleted version."""
    root, _ = repo
    storage = dvc_storage(root)
    (root / "dvc.yaml").write_text("stages:\n  train:\n    cmd: 'true'\n    outs:\n      - models/m\n")
    model = root / "models" / "m"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights trained on a subject " * 64)
    shutil.copy(root / "data" / "notes.txt", model / "notes.txt")  # same bytes as another output's object
    track(root, model)
    assert push(root)
    weights, shared = md5_file(model / "model.safetensors"), md5_file(root / "data" / "notes.txt")
    assert {weights, shared} <= objects(storage.cache) & objects(storage.remotes["local"])

    done = delete_output(root, "models/m")
    assert not model.exists() and done["files"] == 2
    assert weights not in objects(storage.cache) | objects(storage.remotes["local"])
    assert shared in objects(storage.cache) & objects(storage.remotes["local"])  # data/notes.txt still needs it
    assert {e["location"] for e in done["removed"]} == {"DVC cache", "DVC remote local"}
    assert "models/m" in dvc(root, "status")  # the stage is out of date: `dvc repro` rebuilds it
    assert push(root, ["data/notes.txt"])


@pytest.mark.parametrize("ignore,tracks", [(None, True), ("/data/store/\n", False)])
def test_a_store_no_stage_builds_is_versioned_under_the_projects_gitignore(tmp_path, ignore, tracks):
    """The LM's facts store is built outside dvc.yaml, so `track` runs `dvc add data/store/facts`,
    whose `facts.dvc` must not be git-ignored: the project's .gitignore ignores the stores' payloads
    but not their .dvc files. The old line (`/data/store/`, the whole folder) is the input that fails
    — it left `make demo-llm`'s verified request unapplied."""
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    if ignore is not None:
        (root / ".gitignore").write_text((root / ".gitignore").read_text() + ignore)
    dvc(root, "init", "-q")
    store = build_store(load_digits(), root / "data" / "store" / "facts", max_subject_size=10, rows_per_shard=300)
    if tracks:
        assert len(track(root, store.root)) > 4
        assert (root / "data" / "store" / "facts.dvc").is_file()
        ignored = subprocess.run(["git", "check-ignore", "-q", "data/store/facts/index.csv"], cwd=root)
        assert ignored.returncode == 0   # the payload itself stays out of git
    else:
        with pytest.raises(VersioningError, match="dvc add"):
            track(root, store.root)


def test_a_store_added_outside_dvc_yaml_is_pushed_by_its_path_under_the_projects_gitignore(tmp_path):
    """`make demo-llm` failed at `dvc push data/store/facts`: under the project's .gitignore
    (`/data/store/*`, `!/data/store/*.dvc`) DVC does not find the added store by its output path.
    `push` names the store's .dvc file instead, which DVC reads directly."""
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    dvc(root, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")   # remote `local` = ../var/dvc-remote
    store = build_store(load_digits(), root / "data" / "store" / "facts", max_subject_size=10, rows_per_shard=300)
    track(root, store.root)
    assert push(root, ["data/store/facts"])
    remote = dvc_storage(root).remotes["local"]
    assert md5_file(store.root / "index.csv") in objects(remote)
