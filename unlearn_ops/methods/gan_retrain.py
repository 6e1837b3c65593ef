"""`gan_retrain`: exact unlearning for a GAN — train the same DCGAN from scratch on the retain set.

The GAN counterpart of `retrain`: the gold standard `cascaded_gan` is benchmarked against and the
end of every GAN policy chain. The reference classifier carried in the GAN container (class
shares, classifier-feature FID, `generated_filtered` substitutes) was trained on the same data, so
an exact deletion retrains it too (`retrain_reference`): otherwise the registered artifact would
still hold a model fitted on the forgotten images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import (
    ALL_KINDS,
    UnlearnResult,
    build_values,
    check_positive,
    fresh_copy,
    require_model,
    require_retain,
)
from unlearn_ops.models.gan import GAN, GanTrainConfig, init_weights, train_gan
from unlearn_ops.training import TrainConfig, fit, reinitialize

EXACT = True  # the result never saw the forget set (what that changes in verification: verify.gates)
REQUEST_KINDS = ALL_KINDS


@dataclass(frozen=True)
class Config:
    # The pipeline takes the schedule from the model's build section (`schedule_from_build`:
    # params.yaml `gan.gan`, `gan.reference` and `gan.seed`, for a fair reference); these
    # defaults serve direct calls and equal the build's.
    epochs: float = 30               # passes over the retained images
    batch_size: int = 64             # real (and generated) images per step
    lr_g: float = 5e-4               # Adam learning rate of G
    lr_d: float = 2e-4               # Adam learning rate of D
    beta1: float = 0.5               # Adam β1 of DCGAN training
    retrain_reference: bool = True   # also refit the attached reference classifier on the retain set: it saw
    #                                  the forgotten images too
    reference_epochs: float = 10     # the reference classifier's schedule
    reference_lr: float = 1e-3
    reference_batch_size: int = 128
    seed: int = 0                    # weight init, data order and latent draws of both trainings

    def __post_init__(self) -> None:
        check_positive(self, "epochs", "batch_size", "lr_g", "lr_d", "reference_epochs", "reference_lr",
                       "reference_batch_size")


def schedule_from_build(build: Mapping[str, Any]) -> dict[str, Any]:
    """The GAN build's schedule (params.yaml `gan`: its DCGAN training `gan`, its reference
    classifier's `reference` and its seed) as Config fields."""
    return {**build_values("gan_retrain", build, {k: k for k in ("epochs", "batch_size", "lr_g", "lr_d", "beta1")},
                           part="gan"),
            **build_values("gan_retrain", build, {"reference_epochs": "epochs", "reference_lr": "lr",
                                                  "reference_batch_size": "batch_size"}, part="reference"),
            **build_values("gan_retrain", build, {"seed": "seed"})}


def unlearn(model: GAN, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    require_model(model, GAN, "gan_retrain retrains a GAN container")
    require_retain(splits.retain, "gan_retrain")
    gan = init_weights(fresh_copy(model), cfg.seed)
    logs: list[str] = []
    details: dict = {"retain_size": len(splits.retain)}
    if cfg.retrain_reference and gan.reference is not None:
        reference = reinitialize(gan.reference, cfg.seed)
        for p in reference.parameters():  # attach_reference froze it; it learns again here
            p.requires_grad_(True)
        fit(reference, splits.retain, TrainConfig(epochs=cfg.reference_epochs, lr=cfg.reference_lr,
                                                  batch_size=cfg.reference_batch_size, seed=cfg.seed, device=device),
            progress=logs.append)
        gan.attach_reference(reference.cpu(), gan.reference_spec or {})
        details["reference_retrained"] = True
    details["gan_train_seconds"] = train_gan(
        gan.generator, gan.discriminator, splits.retain.x,
        GanTrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr_g=cfg.lr_g, lr_d=cfg.lr_d, beta1=cfg.beta1,
                       seed=cfg.seed, device=device), progress=logs.append)
    return UnlearnResult(gan.cpu().eval(), "gan_retrain", details=details, log=logs)
