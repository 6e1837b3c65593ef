"""Build stage `import`: raw data set → sample store (stable IDs, hashes, subjects, manifest).

Forget-set records under data/forget_sets/ are applied while building, so re-running the
build never brings back data that was deleted on request.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from prefect import flow, task

from flows.params import load_params, resolve
from unlearn_ops.data.sources import LOADERS, fetch_fashion_mnist
from unlearn_ops.data.store import build_store
from unlearn_ops.utils import atomic_write_json

log = logging.getLogger(__name__)
FORGET_SETS = "data/forget_sets"


def forgotten_ids(dataset: str, forget_dir: Path) -> set[str]:
    """Every sample ID of `dataset` in a forget-set record whose deletion was applied (a batch
    whose gates failed left the data in place, and so does a rebuild)."""
    ids: set[str] = set()
    for record in sorted(forget_dir.glob("*.json")):
        data = json.loads(record.read_text())
        for model, part in data.get("models", {}).items():
            if data.get("applied", {}).get(model) and part.get("dataset") == dataset:
                ids.update(part["sample_ids"])
    return ids


@task(name="fetch-raw", retries=2, retry_delay_seconds=5)
def fetch_raw(raw_dir: str) -> str:
    return str(fetch_fashion_mnist(Path(raw_dir)))


@task(name="build-store")
def build_store_task(p: dict) -> dict:
    loader = LOADERS[p["dataset"]]
    raw = loader(resolve(p["raw_dir"])) if p["dataset"] in ("fmnist", "cifar10") else loader()
    exclude = forgotten_ids(p["dataset"], resolve(FORGET_SETS))
    store = build_store(raw, resolve(p["store_dir"]), subject_seed=p["subject_seed"],
                        max_subject_size=p["max_subject_size"], nonmember_fraction=p["nonmember_fraction"],
                        split_seed=p["split_seed"], exclude=exclude)
    summary = {"dataset": store.name, "counts": store.meta["counts"], "active": len(store.active_ids()),
               "purged": len(exclude), "subjects": int(store.index.subject_id[store.index.subject_id != ""].nunique())}
    atomic_write_json(resolve("metrics/import.json"), summary)
    return summary


@flow(name="build-import", log_prints=True)
def import_data(fetch_only: bool = False) -> dict:
    p = load_params()["data"]
    if p["dataset"] == "fmnist":
        fetch_raw(p["raw_dir"])
    if fetch_only:
        return {}
    summary = build_store_task(p)
    print(f"imported {summary['dataset']}: {summary['counts']} (active {summary['active']}, "
          f"purged {summary['purged']}, {summary['subjects']} synthetic subjects)")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fetch-only", action="store_true", help="only make sure the raw files are present")
    args = ap.parse_args()
    if args.fetch_only:  # no Prefect engine needed just to unpack a package
        p = load_params()["data"]
        if p["dataset"] == "fmnist":
            print("Fashion-MNIST at", fetch_fashion_mnist(resolve(p["raw_dir"])))
        return
    import_data()


if __name__ == "__main__":
    main()
