"""Fit / evaluate loops shared by base training, retraining and fine-tuning methods."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.data.splits import Part
from unlearn_ops.progress import track
from unlearn_ops.utils import resolve_device


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3            # fractional epochs are allowed (a share of the last epoch's batches)
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"      # adam | sgd
    momentum: float = 0.9        # sgd only
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"


OPTIMIZERS = ("adam", "sgd")  # what `make_optimizer` builds


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adam or sgd")


def fit(model: nn.Module, data: Part, cfg: TrainConfig,
        progress: Callable[[str], None] | None = None, what: str = "training") -> nn.Module:
    """Train `model` in place with cross-entropy on `data`; returns it (on cfg.device, eval mode).
    Steps are tracked as `what` (unlearn_ops.progress); `progress` also gets each epoch's line."""
    device = resolve_device(cfg.device)
    model.to(device).train()
    torch.manual_seed(cfg.seed)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    loader = data.loader(cfg.batch_size, shuffle=True, seed=cfg.seed)
    total_steps = math.ceil(cfg.epochs * len(loader))
    epochs = math.ceil(total_steps / max(len(loader), 1))
    step, epoch = 0, 0
    with track(what, total_steps) as bar:
        while step < total_steps:
            running, seen = 0.0, 0
            for x, y in loader:
                if step >= total_steps:
                    break
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                running += loss.item() * len(y)
                seen += len(y)
                step += 1
                bar.advance(epoch=f"{epoch + 1}/{epochs}", loss=round(running / seen, 4))
            epoch += 1
            msg = f"epoch {epoch}: loss {running / max(seen, 1):.4f} ({step}/{total_steps} steps)"
            bar.note(msg)
            if progress:
                progress(msg)
    return model.eval()


# Inference batch size when none is given. On CPU small batches keep a conv layer's activations
# in cache: the Fashion-MNIST CNN predicts 1.8x faster at 128 than at 1024 on one thread, with
# bit-identical logits (measured; it is most of a benchmark's evaluation time). GPUs want big ones.
CPU_PREDICT_BATCH, CUDA_PREDICT_BATCH = 128, 1024
TRACK_PREDICTIONS_FROM = 4096  # rows: a prediction pass this long shows progress (unlearn_ops.progress)


def inference_batch_size(device: torch.device) -> int:
    return CPU_PREDICT_BATCH if device.type == "cpu" else CUDA_PREDICT_BATCH


class PredictionCache:
    """Logits already computed inside a `cached_predictions()` block, per model and input row.

    A verification reads the same parts several times (accuracy, loss-MIA, accuracy gap, report),
    and parts of parts (the forgotten class's test samples, same-class non-members): without this,
    a Fashion-MNIST class deletion ran the CNN over 79 000 images for 36 000 distinct ones. Rows
    are keyed by their content, models by identity and parameter versions (an in-place update
    starts afresh); the models are held, so an identity is never reused within the block."""

    def __init__(self) -> None:
        self._models: dict[int, tuple[nn.Module, tuple[int, ...], dict[bytes, torch.Tensor]]] = {}
        self.computed = self.reused = 0

    def predict(self, model: nn.Module, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        versions = tuple(p._version for p in model.parameters())
        held = self._models.get(id(model))
        if held is None or held[1] != versions:
            held = self._models[id(model)] = (model, versions, {})
        rows = held[2]
        flat = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
        missing = sorted({i for i, k in enumerate(keys) if k not in rows}) if keys else []
        if missing:
            logits = compute(x[missing])
            for i, out in zip(missing, logits, strict=True):
                rows.setdefault(keys[i], out)
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        return torch.stack([rows[k] for k in keys]) if keys else torch.empty(0)


_PREDICTIONS: ContextVar[PredictionCache | None] = ContextVar("unlearn_ops_predictions", default=None)


@contextmanager
def cached_predictions() -> Iterator[PredictionCache]:
    """Inside this block `predict_logits` computes each (model, input row) once (see PredictionCache).
    The models must not change inside it except through in-place parameter updates."""
    cache = PredictionCache()
    token = _PREDICTIONS.set(cache)
    try:
        yield cache
    finally:
        _PREDICTIONS.reset(token)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Logits for `x` in eval mode, on CPU; the model's own device is used by default."""
    device = torch.device(device or next(model.parameters()).device)
    batch_size = batch_size or inference_batch_size(device)

    def compute(inputs: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = []
        # only long passes are tracked (an evaluation of a whole data set), not every small batch
        with track("predicting", len(inputs), "sample") if len(inputs) >= TRACK_PREDICTIONS_FROM else nullcontext() as bar:
            for i in range(0, len(inputs), batch_size):
                out.append(model(inputs[i:i + batch_size].to(device)).float().cpu())
                if bar is not None:
                    bar.advance(len(out[-1]))
        model.train(was_training)
        return torch.cat(out) if out else torch.empty(0)

    cache = _PREDICTIONS.get()
    return compute(x) if cache is None else cache.predict(model, x, compute)


def per_sample_loss(model: nn.Module, data: Part, batch_size: int | None = None) -> torch.Tensor:
    logits = predict_logits(model, data.x, batch_size)
    return F.cross_entropy(logits, data.y, reduction="none")


def accuracy(model: nn.Module, data: Part, batch_size: int | None = None) -> float:
    """Top-1 accuracy on `data`; NaN for an empty part (so a missing split is never 'perfect')."""
    if len(data) == 0:
        return float("nan")
    return (predict_logits(model, data.x, batch_size).argmax(1) == data.y).float().mean().item()


def per_class_accuracy(model: nn.Module, data: Part, num_classes: int) -> list[float]:
    pred = predict_logits(model, data.x).argmax(1)
    out = []
    for c in range(num_classes):
        mask = data.y == c
        out.append((pred[mask] == c).float().mean().item() if mask.any() else float("nan"))
    return out


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """Reset every layer's parameters in place, seeded (used by retraining from scratch)."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model
