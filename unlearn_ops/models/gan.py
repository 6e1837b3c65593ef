"""A small DCGAN for 28×28 grey images, its training loop, and safe (safetensors) save / load.

Sized for CPUs: on 2 cores a training step on a batch of 64 takes tens of milliseconds, so the
MNIST-5k build (4 000 images) trains in a few minutes. The discriminator has **no batch norm**:
its score for an image must not depend on the other images in the batch, because the unlearning
method (`methods/cascaded_gan.py`) scores forget images in their own batches and the
discriminator-score membership test scores single images.

`GAN` is a container: `generator`, `discriminator` and, optionally, a frozen `reference`
classifier (the project's `SmallCNN` trained on the same data). The reference is not part of the
generative model; it travels with it because class unlearning (`generated_filtered`
substitution) and GAN verification (class share, classifier-feature FID) need it, and
`run_method` passes one model object. Its spec is nested in the GAN's spec, so `load_model`
rebuilds everything from `spec.json` + `model.safetensors` (no pickle).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from unlearn_ops.progress import track
from unlearn_ops.utils import resolve_device


class Generator(nn.Module):
    """z (N×z_dim) → fc → 7×7 → transposed conv → 14×14 → transposed conv → 28×28 in [0, 1]."""

    def __init__(self, z_dim: int = 64, width: int = 32, channels: int = 1) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 7 * 7, bias=False),
                                nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(len(z), 2 * self.width, 7, 7)
        # sigmoid, not tanh: the sample store serves images in [0, 1], so G's output lives there too
        return torch.sigmoid(self.net(h))


class Discriminator(nn.Module):
    """28×28 → conv → 14×14 → conv → 7×7 → linear → one logit per image (no sigmoid, no batch norm).

    Dropout instead of batch norm keeps D from overpowering G on only 4 000 images (as in the
    TensorFlow DCGAN tutorial); it is off in eval mode, so scores are deterministic there.
    """

    def __init__(self, width: int = 32, channels: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
        )
        self.out = nn.Linear(2 * width * 7 * 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.flatten(self.net(x), 1)).squeeze(1)


class GAN(nn.Module):
    """Generator + discriminator (+ optional frozen reference classifier), one saveable module.

    `forward(z)` generates images. `spec()` returns the JSON spec `build_model` rebuilds it from
    (`{"arch": "dcgan", ...}`), with the reference classifier's spec nested under `reference`.
    """

    def __init__(self, z_dim: int = 64, g_width: int = 32, d_width: int = 32, channels: int = 1,
                 image_size: int = 28, d_dropout: float = 0.3, reference: dict[str, Any] | None = None) -> None:
        super().__init__()
        if image_size != 28:
            raise ValueError(f"this DCGAN is built for 28×28 images, not {image_size}")
        self.hparams = {"z_dim": z_dim, "g_width": g_width, "d_width": d_width, "channels": channels,
                        "image_size": image_size, "d_dropout": d_dropout}
        self.generator = Generator(z_dim, g_width, channels)
        self.discriminator = Discriminator(d_width, channels, d_dropout)
        self.reference: nn.Module | None = None
        self.reference_spec: dict[str, Any] | None = None
        if reference is not None:
            from unlearn_ops.models import build_model  # lazy: models/__init__ imports this module

            self.attach_reference(build_model(reference), reference)

    @property
    def z_dim(self) -> int:
        return int(self.hparams["z_dim"])

    def attach_reference(self, classifier: nn.Module, spec: dict[str, Any]) -> GAN:
        """Attach a (trained) classifier as the frozen reference; returns self."""
        classifier.eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
        self.reference = classifier
        self.reference_spec = dict(spec)
        return self

    def spec(self) -> dict[str, Any]:
        return {"arch": "dcgan", **self.hparams, "reference": self.reference_spec}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def train(self, mode: bool = True) -> GAN:
        super().train(mode)
        if self.reference is not None:  # the reference classifier is always in eval mode
            self.reference.eval()
        return self


def latent(n: int, z_dim: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Seeded standard-normal latent vectors (drawn on CPU so every device sees the same z)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def generate(gan: GAN, n: int, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """n images from the generator in eval mode (batch-norm running statistics), on CPU."""
    device = next(gan.generator.parameters()).device
    was = gan.generator.training
    gan.generator.eval()
    z = latent(n, gan.z_dim, seed)
    out = [gan.generator(z[i:i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)]
    gan.generator.train(was)
    return torch.cat(out) if out else torch.empty(0, 1, 28, 28)


@torch.no_grad()
def d_scores(gan: GAN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """D's probability 'real' for each image (sigmoid of the logit), eval mode (no dropout), on CPU."""
    d = gan.discriminator
    device = next(d.parameters()).device
    was = d.training
    d.eval()
    out = [torch.sigmoid(d(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
    d.train(was)
    return torch.cat(out) if out else torch.empty(0)


def save_sample_grid(gan: GAN, path: str | Path, n: int = 64, seed: int = 0, nrow: int = 8) -> Path:
    """A PNG grid of n generated samples (fixed latent seed, so versions are comparable)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(generate(gan, n, seed), str(path), nrow=nrow, padding=2, pad_value=1.0)
    return path


@dataclass(frozen=True)
class GanTrainConfig:
    epochs: float = 30          # passes over the training images (fractional allowed)
    batch_size: int = 64        # real images per step (and as many generated ones)
    lr_g: float = 5e-4          # G learns faster than D (two time-scale rule): with 2e-4 for both,
    lr_d: float = 2e-4          # D won within ~300 steps on 4 000 images and G collapsed
    beta1: float = 0.5          # Adam β1 = 0.5, the DCGAN paper's setting (0.9 oscillates)
    seed: int = 0               # weight init, data order and latent draws
    device: str = "auto"


def init_weights(gan: GAN, seed: int) -> GAN:
    """Seeded PyTorch default init of G and D (the reference classifier is left alone).

    Not the DCGAN paper's N(0, 0.02): with it the sigmoid output layer needed far more than the
    ~2 000 steps of a CPU build to reach bright strokes (samples stayed grey and dim).
    """
    torch.manual_seed(seed)
    for m in list(gan.generator.modules()) + list(gan.discriminator.modules()):
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return gan


def bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def train_gan(generator: Generator, discriminator: Discriminator, images: torch.Tensor, cfg: GanTrainConfig,
              progress: Callable[[str], None] | None = None) -> float:
    """Standard DCGAN training in place (BCE, non-saturating G loss, Adam β1 = 0.5).

    One step: D on a real batch (target 1) and a generated batch (target 0), then G so that D
    calls its batch real. Returns the training wall-clock seconds (the retraining baseline of
    GAN unlearning). Both networks end in eval mode on `cfg.device`.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # D's dropout draws from the global generator
    g, d = generator.to(device).train(), discriminator.to(device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(images)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = math.ceil(cfg.epochs * steps_per_epoch)
    start = time.perf_counter()
    step = 0
    with track("GAN training", total) as bar:
        while step < total:
            order = torch.randperm(n, generator=gen)
            d_sum = g_sum = 0.0
            for i in range(steps_per_epoch):
                if step >= total:
                    break
                real = images[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]].to(device)
                z = torch.randn(len(real), g.z_dim, generator=gen).to(device)
                fake = g(z)
                loss_d = bce_logits(d(real), 1.0) + bce_logits(d(fake.detach()), 0.0)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                loss_g = bce_logits(d(fake), 1.0)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                d_sum, g_sum, step = d_sum + loss_d.item(), g_sum + loss_g.item(), step + 1
                bar.advance(epoch=f"{math.ceil(step / steps_per_epoch)}/{math.ceil(total / steps_per_epoch)}")
            k = (step - 1) % steps_per_epoch + 1
            line = f"gan step {step}/{total}: loss_d {d_sum / k:.3f} loss_g {g_sum / k:.3f}"
            bar.note(line)
            if progress:
                progress(line)
    seconds = time.perf_counter() - start
    g.eval()
    d.eval()
    return seconds


def save_gan(gan: GAN, directory: str | Path) -> Path:
    """`spec.json` + `model.safetensors` (G, D and the reference classifier in one file)."""
    from unlearn_ops.models import save_model

    return save_model(gan, gan.spec(), directory)


def load_gan(directory: str | Path, device: str | torch.device = "cpu") -> GAN:
    """Rebuild from the spec and load with safetensors (no pickle); refuses non-GAN folders."""
    from unlearn_ops.models import load_model

    model, spec = load_model(directory, device)
    if not isinstance(model, GAN):
        raise ValueError(f"{directory} holds a {spec.get('arch')!r} model, not a dcgan")
    return model


__all__ = ["GAN", "Generator", "Discriminator", "GanTrainConfig", "train_gan", "init_weights", "latent",
           "generate", "d_scores", "save_gan", "load_gan", "save_sample_grid"]
