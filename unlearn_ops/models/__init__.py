"""Model architectures and safe (safetensors) save / load.

A model is described by a small JSON *spec* (`{"arch": "cnn", "num_classes": 10, ...}`); the
weights live in `model.safetensors`. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unlearn_ops.models.classifiers import ResNet18, SmallCNN
from unlearn_ops.models.gan import GAN
from unlearn_ops.models.sharded import ShardedEnsemble
from unlearn_ops.models.text import text_classifier

ARCHS: dict[str, Callable[..., nn.Module]] = {"cnn": SmallCNN, "resnet18": ResNet18, "dcgan": GAN,
                                           "text": text_classifier, "sharded": ShardedEnsemble}
WEIGHTS, SPEC = "model.safetensors", "spec.json"
LM_ARCH = "causal_lm"  # the spec `load_any` reports for a save_pretrained language-model folder


def build_model(spec: dict[str, Any]) -> nn.Module:
    spec = dict(spec)
    arch = spec.pop("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch](**spec)


def save_model(model: nn.Module, spec: dict[str, Any], directory: str | Path) -> Path:
    """Write `spec.json` + `model.safetensors` into `directory` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild from the spec and load the weights with safetensors (no pickle)."""
    directory = Path(directory)
    if not (directory / SPEC).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"{directory} does not hold {SPEC} and {WEIGHTS}")
    spec = json.loads((directory / SPEC).read_text())
    model = build_model(spec)
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=str(device)))
    return model.to(device).eval(), spec


def load_any(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load any folder this pipeline saves: a `save_lm` folder (a causal LM) or spec.json +
    safetensors, a sharded classifier's shard map and checkpoints included (how each model
    family saves is unlearn_ops/families.py)."""
    from unlearn_ops.models.lm import is_lm_dir, load_lm
    from unlearn_ops.models.sharded import load_classifier

    if is_lm_dir(directory):
        return load_lm(directory, device), {"arch": LM_ARCH}
    return load_classifier(directory, device)


def state_fingerprint(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the state dict, to check later that a model was not mutated."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


__all__ = ["ARCHS", "LM_ARCH", "SmallCNN", "ResNet18", "GAN", "ShardedEnsemble", "build_model", "load_any", "load_model", "save_model",
           "state_fingerprint"]
