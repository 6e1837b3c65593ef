"""Build stages of the GAN: `import` (MNIST-5k sample store), `train` (reference classifier + DCGAN),
`register` (MLflow: `mnist-gan` version + alias `champion`, sample grid and training time logged).

    python -m flows.build_gan import|train|register

Values come from params.yaml `gan`. The reference classifier (the project's `SmallCNN` on the same
data) is attached to the GAN container, so the registered `mnist-gan` artifact carries what class
unlearning and GAN verification need. The GAN's training seconds are recorded: they are the
retraining baseline of GAN unlearning.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prefect import flow, task

from flows.import_data import FORGET_SETS, forgotten_ids
from flows.params import load_params, resolve
from tasks.registry import register_build
from unlearn_ops.data.sources import LOADERS
from unlearn_ops.data.store import SampleStore, build_store
from unlearn_ops.models import build_model
from unlearn_ops.models.gan import GAN, GanTrainConfig, init_weights, save_gan, save_sample_grid, train_gan
from unlearn_ops.training import TrainConfig, accuracy, fit
from unlearn_ops.utils import atomic_write_json, seed_everything
from unlearn_ops.verify.gan import FID_NAME, class_histogram, classifier_fid, d_generated_mean

METRICS = "metrics/gan.json"
SAMPLES = "samples.png"  # written beside the weights; load_gan reads only spec.json + model.safetensors


def model_dir(p: dict) -> Path:
    return resolve(f"models/{p['model_name']}")


@task(name="gan-import")
def import_task(p: dict) -> dict:
    """(Re)build the MNIST-5k sample store; IDs in forget-set records stay purged."""
    raw = LOADERS[p["dataset"]]()
    exclude = forgotten_ids(p["dataset"], resolve(FORGET_SETS))
    store = build_store(raw, resolve(p["store_dir"]), subject_seed=p["subject_seed"],
                        max_subject_size=p["max_subject_size"], nonmember_fraction=p["nonmember_fraction"],
                        split_seed=p["split_seed"], exclude=exclude)
    return {"dataset": store.name, "counts": store.meta["counts"], "active": len(store.active_ids()),
            "purged": len(exclude)}


@task(name="gan-train", tags=["gpu"])
def train_task(p: dict) -> dict:
    """Reference classifier, then the DCGAN, on the store's active train set; saves both in one folder."""
    store = SampleStore(resolve(p["store_dir"]))
    splits = store.splits()
    c, h, _ = store.meta["payload_shape"]
    r = p["reference"]
    ref_spec = {"arch": "cnn", "in_channels": c, "num_classes": len(store.classes), "image_size": h,
                **{k: r[k] for k in ("widths", "hidden") if k in r}}
    seed_everything(p["seed"])
    reference = build_model(ref_spec)
    fit(reference, splits.retain, TrainConfig(epochs=r["epochs"], lr=r["lr"], batch_size=r["batch_size"],
                                              seed=p["seed"], device=p["device"]), what="reference classifier training")
    reference = reference.cpu().eval()
    ref_acc = accuracy(reference, splits.test)
    if ref_acc < r["min_test_accuracy"]:
        raise RuntimeError(f"reference classifier test accuracy {ref_acc:.4f} < {r['min_test_accuracy']}: "
                           "GAN metrics would be meaningless")
    g = p["gan"]
    gan = init_weights(GAN(z_dim=g["z_dim"], g_width=g["g_width"], d_width=g["d_width"], channels=c,
                           image_size=h, d_dropout=g["d_dropout"]), p["seed"])
    cfg = GanTrainConfig(epochs=g["epochs"], batch_size=g["batch_size"], lr_g=g["lr_g"], lr_d=g["lr_d"],
                         beta1=g["beta1"], seed=p["seed"], device=p["device"])
    seconds = train_gan(gan.generator, gan.discriminator, splits.retain.x, cfg)
    gan = gan.cpu().eval().attach_reference(reference, ref_spec)
    out = save_gan(gan, model_dir(p))
    save_sample_grid(gan, out / SAMPLES, n=64, seed=0)
    n = p["eval_samples"]
    metrics = {"train_seconds": seconds, "reference_test_accuracy": ref_acc, "train_images": len(splits.retain),
               "fid": classifier_fid(gan, splits.retain.x, n=n), "d_generated_mean": d_generated_mean(gan, n)}
    metrics.update({f"generated_share_class_{i}": s
                    for i, s in enumerate(class_histogram(gan, len(store.classes), n=n))})
    atomic_write_json(resolve(METRICS), {**metrics, "fid_kind": FID_NAME})
    print(f"trained {p['model_name']} in {seconds:.0f} s ({FID_NAME}: {metrics['fid']:.2f}; "
          f"reference classifier test accuracy {ref_acc:.4f}) -> {out}")
    return metrics


@task(name="gan-register", retries=2, retry_delay_seconds=2)
def register_task(p: dict) -> str:
    directory = model_dir(p)
    flat = {f"gan.{k}": v for k, v in p.items() if not isinstance(v, dict)}
    flat.update({f"gan.{section}.{k}": v for section in ("gan", "reference") for k, v in p[section].items()})
    return register_build(directory, name=p["model_name"], family="gan", experiment=p["experiment"],
                          run_name="build-gan", store=SampleStore(resolve(p["store_dir"])), params=flat,
                          metrics=json.loads(resolve(METRICS).read_text()), tags={"fid_kind": FID_NAME},
                          artifacts=[directory / SAMPLES])


@flow(name="build-gan-import", log_prints=True)
def gan_import(params: dict | None = None) -> dict:
    return import_task((params or load_params())["gan"])


@flow(name="build-gan-train", log_prints=True)
def gan_train(params: dict | None = None) -> dict:
    return train_task((params or load_params())["gan"])


@flow(name="build-gan-register", log_prints=True)
def gan_register(params: dict | None = None) -> str:
    """Idempotent (keyed on the weights' sha256), so `dvc repro` can run it every time."""
    return register_task((params or load_params())["gan"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["import", "train", "register"])
    args = ap.parse_args()
    start = time.perf_counter()
    {"import": gan_import, "train": gan_train, "register": gan_register}[args.stage]()
    print(f"build-gan {args.stage}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
