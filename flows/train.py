"""Build stages `train` (fit the base classifier) and `register` (MLflow: version + `champion`)."""

from __future__ import annotations

import argparse
import json
import time

from prefect import flow, task
from torch import nn

from flows.params import load_params, resolve
from tasks.registry import register_build
from unlearn_ops.data.splits import Part
from unlearn_ops.data.store import SampleStore
from unlearn_ops.families import family
from unlearn_ops.models import build_model
from unlearn_ops.models.sharded import ShardMap
from unlearn_ops.sharding import MemberSchedule, is_sharded, sharding_of, train_ensemble
from unlearn_ops.training import TrainConfig, accuracy, cached_predictions, fit, per_class_accuracy
from unlearn_ops.utils import atomic_write_json, seed_everything

MODEL_DIR = "models/{name}"


def model_spec(arch: str, store: SampleStore) -> dict:
    c, h, _ = store.meta["payload_shape"]
    return {"arch": arch, "in_channels": c, "num_classes": len(store.classes), "image_size": h}


def fit_model(t: dict, store: SampleStore, data: Part, spec: dict) -> tuple[nn.Module, dict]:
    """The classifier and its spec: one model, or with `train.shards` / `slices` / `pool_fraction`
    a sharded one (SISA: members on disjoint shards of whole data subjects, slice checkpoints)."""
    if not is_sharded(t):
        model = build_model(spec)
        fit(model, data, TrainConfig(epochs=t["epochs"], lr=t["lr"], batch_size=t["batch_size"], seed=t["seed"],
                                     device=t["device"]))  # epochs: unlearn_ops.progress notes
        return model, spec
    shards, slices, pool = sharding_of(t)
    ids = list(data.ids)
    shard_map = ShardMap.assign(ids, store.index.loc[ids, "subject_id"].tolist(), shards, slices, pool)
    schedule = MemberSchedule(t["epochs"], t["lr"], t["batch_size"], t["seed"], device=t["device"],
                              pool_epochs=t.get("pool_epochs", 0.0))
    model = train_ensemble(spec, data, shard_map, schedule, progress=print)
    return model, model.spec()


@task(name="train-base", tags=["gpu"])
def train_task(params: dict) -> dict:
    t, d = params["train"], params["data"]
    store = SampleStore(resolve(d["store_dir"]))
    splits = store.splits()
    seed_everything(t["seed"])
    start = time.perf_counter()
    model, spec = fit_model(t, store, splits.retain, model_spec(t["arch"], store))
    seconds = time.perf_counter() - start
    model = model.cpu()
    with cached_predictions():  # the per-class accuracies reuse the test predictions
        metrics = {"train_accuracy": accuracy(model, splits.retain), "test_accuracy": accuracy(model, splits.test),
                   "nonmember_accuracy": accuracy(model, splits.nonmember), "train_seconds": seconds}
        metrics.update({f"test_accuracy_class_{i}": a
                        for i, a in enumerate(per_class_accuracy(model, splits.test, splits.num_classes))})
    if metrics["test_accuracy"] < t["min_test_accuracy"]:
        raise RuntimeError(f"base model test accuracy {metrics['test_accuracy']:.4f} < "
                           f"{t['min_test_accuracy']}: not saving a broken model")
    out = family("classifier").save(model, spec, resolve(MODEL_DIR.format(name=t["model_name"])))
    atomic_write_json(resolve("metrics/train.json"), metrics)
    print(f"trained {t['model_name']}: test accuracy {metrics['test_accuracy']:.4f} in {seconds:.0f} s -> {out}")
    return metrics


@flow(name="build-train", log_prints=True)
def train() -> dict:
    return train_task(load_params())


@flow(name="build-register", log_prints=True)
def register() -> str:
    """Register the built model as `champion` unless these exact weights are registered already.

    Idempotent (keyed on the weights' sha256), so `dvc repro` can run it every time.
    """
    params = load_params()
    t = params["train"]
    metrics = json.loads(resolve("metrics/train.json").read_text())
    return register_build(resolve(MODEL_DIR.format(name=t["model_name"])), name=t["model_name"], family="classifier",
                          experiment=t["experiment"], run_name="build-train",
                          store=SampleStore(resolve(params["data"]["store_dir"])),
                          params={**{f"train.{k}": v for k, v in t.items()},
                                  **{f"data.{k}": v for k, v in params["data"].items()}},
                          metrics=metrics, artifacts=[resolve("metrics/validation.json")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("stage", choices=["train", "register"])
    args = ap.parse_args()
    train() if args.stage == "train" else register()


if __name__ == "__main__":
    main()
