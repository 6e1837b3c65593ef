"""Cached stores, base models and retrain references shared by every benchmark.

Retraining from scratch is the gold standard every benchmark runs side by side, and by far the
most expensive part. A model is cached under var/bench-cache/models/<key>/ where the key hashes
everything that determines it (data set, the exact training IDs, architecture, schedule, seed),
so protocols that need the same reference (e.g. "Fashion-MNIST without class 3, seed 1") train
it once. The cache keeps the measured training seconds, so speed-ups stay honest when a cached
model is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from unlearn_ops.data.sources import LOADERS
from unlearn_ops.data.splits import Part
from unlearn_ops.data.store import SampleStore, build_store
from unlearn_ops.models import build_model, load_model, save_model
from unlearn_ops.training import TrainConfig, fit
from unlearn_ops.utils import atomic_write_json, canonical_json, project_root, seed_everything

CACHE = project_root() / "var" / "bench-cache"
RAW = {"fmnist": project_root() / "data" / "raw" / "fashion-mnist"}

# The build's schedule (params.yaml `train`) for Fashion-MNIST; MNIST-5k is 12x smaller, so more epochs.
SCHEDULES = {
    "fmnist": TrainConfig(epochs=3, lr=1e-3, batch_size=128),
    "mnist5k": TrainConfig(epochs=10, lr=1e-3, batch_size=128),
    "digits": TrainConfig(epochs=15, lr=3e-3, batch_size=64),
}


def store(dataset: str) -> SampleStore:
    """The benchmark's own copy of a data set's store (never the pipeline's active store)."""
    root = CACHE / "stores" / dataset
    if (root / "index.csv").is_file():
        return SampleStore(root)
    loader = LOADERS[dataset]
    raw = loader(RAW[dataset]) if dataset in RAW else loader()
    return build_store(raw, root)


def spec_for(s: SampleStore, arch: str = "cnn") -> dict:
    c, h, _ = s.meta["payload_shape"]
    return {"arch": arch, "in_channels": c, "num_classes": len(s.classes), "image_size": h}


def _key(dataset: str, train_ids: Sequence[str], spec: dict, cfg) -> str:
    ids_hash = hashlib.sha256("\n".join(sorted(train_ids)).encode()).hexdigest()
    payload = {"dataset": dataset, "ids": ids_hash, "spec": spec, "cfg": {**asdict(cfg), "device": "any"}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:20]


def trained(dataset: str, data: Part, spec: dict, cfg: TrainConfig, label: str = "") -> tuple[nn.Module, float]:
    """Train `spec` on `data` with `cfg` (cached). Returns (model on CPU, training seconds)."""
    key = _key(dataset, data.ids, spec, cfg)
    folder = CACHE / "models" / key
    meta = folder / "meta.json"
    if meta.is_file():
        model, _ = load_model(folder)
        return model, float(json.loads(meta.read_text())["seconds"])
    seed_everything(cfg.seed)
    model = build_model(spec)
    start = time.perf_counter()
    fit(model, data, cfg, progress=lambda m: print(f"  [{label or key}] {m}", flush=True))
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    save_model(model, spec, folder)
    atomic_write_json(meta, {"seconds": seconds, "label": label, "n_train": len(data), "cfg": asdict(cfg),
                             "device": str(next(model.parameters()).device)})
    return model, seconds


def trained_gan(dataset: str, data: Part, arch: dict, cfg, label: str = "") -> tuple[nn.Module, dict]:
    """The DCGAN `arch` trained from scratch on `data` with `cfg` (a GanTrainConfig; init seed = cfg.seed),
    cached like the classifiers. Returns (GAN on CPU, {"seconds", "cpu_seconds"} measured when trained)."""
    from unlearn_ops.models.gan import GAN, init_weights, load_gan, save_gan, train_gan

    folder = CACHE / "gans" / _key(dataset, data.ids, {"arch": "dcgan", **arch}, cfg)
    meta = folder / "meta.json"
    if meta.is_file():
        return load_gan(folder).eval(), json.loads(meta.read_text())["timing"]
    gan = init_weights(GAN(**arch), cfg.seed)
    cpu = time.process_time()
    seconds = train_gan(gan.generator, gan.discriminator, data.x, cfg)
    timing = {"seconds": seconds, "cpu_seconds": time.process_time() - cpu}
    gan = gan.cpu().eval()
    save_gan(gan, folder)
    atomic_write_json(meta, {"timing": timing, "label": label, "n_train": len(data), "cfg": asdict(cfg)})
    return gan, timing


def schedule(dataset: str, seed: int, **overrides) -> TrainConfig:
    return TrainConfig(**{**asdict(SCHEDULES[dataset]), "seed": seed, **overrides})


def base_model(dataset: str, seed: int, cfg: TrainConfig | None = None,
               train_ids: Sequence[str] | None = None) -> tuple[nn.Module, float]:
    """The original model: trained on the whole active train pool (or `train_ids`)."""
    s = store(dataset)
    ids = list(train_ids) if train_ids is not None else s.active_ids()
    return trained(dataset, s.part(ids), spec_for(s), cfg or schedule(dataset, seed), f"{dataset} base s{seed}")


def retrain_reference(dataset: str, train_ids: Sequence[str], forget_ids: Sequence[str], seed: int,
                      cfg: TrainConfig | None = None) -> tuple[nn.Module, float]:
    """The gold standard: same architecture and schedule, from scratch, on train_ids minus forget_ids."""
    s = store(dataset)
    drop = set(forget_ids)
    retain = [i for i in train_ids if i not in drop]
    return trained(dataset, s.part(retain), spec_for(s), cfg or schedule(dataset, seed),
                   f"{dataset} retrain s{seed} (-{len(drop)})")


def device_note() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- language models (issue 8)
def facts_store() -> SampleStore:
    """The benchmark's copy of the generated facts store (people = subjects; held-out people = non-members)."""
    from unlearn_ops.data.facts import build_facts_store

    root = CACHE / "stores" / "facts"
    return SampleStore(root) if (root / "index.csv").is_file() else build_facts_store(root)


def lm_trained(base_dir: Path, data: Part, cfg, trainable_blocks: int, label: str = "") -> tuple[nn.Module, float]:
    """Fine-tune the LM checkpoint in `base_dir` on the QA pairs of `data` with `cfg`
    (`LMTrainConfig`), cached like `trained`: the key hashes the base weights, the exact training
    IDs, the trainable blocks and the schedule. Returns (CausalLM on CPU, training seconds).
    Used for the facts base model and for the LM retrain references (= `lm_retrain`)."""
    from unlearn_ops.data.facts import texts
    from unlearn_ops.lm_training import fit_lm
    from unlearn_ops.models.lm import load_lm, save_lm
    from unlearn_ops.utils import sha256_file

    ids_hash = hashlib.sha256("\n".join(sorted(data.ids)).encode()).hexdigest()
    payload = {"kind": "lm", "base": sha256_file(Path(base_dir) / "model.safetensors"), "ids": ids_hash,
               "blocks": trainable_blocks, "cfg": {**asdict(cfg), "device": "any"}}
    folder = CACHE / "models" / hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:20]
    meta = folder / "meta.json"
    if meta.is_file():
        return load_lm(folder / "model"), float(json.loads(meta.read_text())["seconds"])
    start = time.perf_counter()
    model = load_lm(base_dir, trainable_blocks=trainable_blocks)
    fit_lm(model, texts(data.x), cfg, progress=lambda m: print(f"  [{label or 'lm'}] {m}", flush=True))
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    save_lm(model, folder / "model")
    atomic_write_json(meta, {"seconds": seconds, "label": label, "n_train": len(data), "cfg": asdict(cfg),
                             "blocks": trainable_blocks})
    return model, seconds
