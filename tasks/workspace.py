"""Where a deployment keeps its state. Everything is relative to one root (the project by
default, a temp folder in tests), so a flow run touches nothing outside it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tasks.env import project_root
from unlearn_ops.data.store import SampleStore
from unlearn_ops.families import DEFAULT, FAMILIES
from unlearn_ops.methods import method_params
from unlearn_ops.sharding import is_sharded


class ConfigError(ValueError):
    """params.yaml asks for something the pipeline cannot do truthfully; nothing has run."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Workspace:
        return cls(Path(root or project_root()).resolve())

    def path(self, relative: str | Path) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @cached_property
    def params(self) -> dict[str, Any]:
        params = yaml.safe_load((self.root / "params.yaml").read_text()) or {}
        self._check_one_model_per_store(params.get("models") or {})
        return params

    inbox = property(lambda self: self.root / "data" / "requests" / "inbox")
    processed = property(lambda self: self.root / "data" / "requests" / "processed")
    quarantine = property(lambda self: self.root / "data" / "requests" / "quarantine")
    forget_sets = property(lambda self: self.root / "data" / "forget_sets")
    certificates = property(lambda self: self.root / "data" / "certificates")
    audit_log = property(lambda self: self.root / "data" / "audit" / "log.jsonl")
    ledger_path = property(lambda self: self.root / "data" / "ledger.sqlite")
    runs = property(lambda self: self.root / "var" / "batches")

    def served_models(self) -> dict[str, dict[str, Any]]:
        return dict(self.params.get("models") or {})

    def _check_one_model_per_store(self, models: dict[str, dict[str, Any]]) -> None:
        """A request names one model and its batch retires that model alone, so a second model
        trained on the same store would keep serving what it learnt from the purged samples while
        the certificate says they are forgotten: such a params.yaml is refused when it is read, before
        any request is touched."""
        owner: dict[Path, str] = {}
        for name, section in models.items():
            if not (section or {}).get("store_dir"):
                continue
            store = self.path(section["store_dir"]).resolve()
            if store in owner:
                raise ConfigError(
                    f"models.{owner[store]} and models.{name} are trained on the same store ({store}): a deletion "
                    f"request names one model, so the other would keep serving what it learnt from the erased "
                    f"samples and the certificate would be false. Give each model a store of its own "
                    f"(docs/erasure.md, \"One store, one model\")")
            owner[store] = name

    def family(self, model: str) -> str:
        """`classifier` (default), `text`, `gan` or `lm`: which metrics verify the model (params.yaml `models.<name>.family`)."""
        family = self.served_models().get(model, {}).get("family", DEFAULT)
        if family not in FAMILIES:
            raise ValueError(f"models.{model}.family must be one of {sorted(FAMILIES)}, not {family!r}")
        return family

    def gates_for(self, model: str) -> dict[str, Any]:
        """The gates of the model's family: `gates` for image classifiers, `text_gates`, `gan_gates`, `lm_gates`."""
        section = FAMILIES[self.family(model)].gate_section
        if section not in self.params:
            raise KeyError(f"params.yaml has no `{section}` section: {model} ({self.family(model)}) cannot be verified")
        return self.params[section]

    def method_params(self, model: str, method: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """The settings `method` runs with on `model`: for an exact method the schedule of the
        model's build section (params.yaml `models.<model>.build` names it), then `unlearn.<method>`,
        then `settings` (a policy chain entry's own `with`)."""
        section = self.served_models().get(model, {}).get("build")
        if section is not None and section not in self.params:
            raise KeyError(f"models.{model}.build names `{section}`, which params.yaml does not have")
        return method_params(method, {**((self.params.get("unlearn") or {}).get(method) or {}), **(settings or {})},
                             self.params[section] if section is not None else None)

    def is_sharded(self, model: str) -> bool:
        """Whether the model's build section trains a sharded classifier (`shards`, `slices`, `pool_fraction`)."""
        section = self.served_models().get(model, {}).get("build")
        return section is not None and is_sharded(self.params.get(section) or {})

    def store_for(self, model: str) -> SampleStore:
        served = self.served_models()
        if model not in served:
            raise KeyError(f"model {model!r} is not served by this pipeline (no `models.{model}` in params.yaml)")
        return SampleStore(self.path(served[model]["store_dir"]))
