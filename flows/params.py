"""Reading params.yaml (the one place for tunable values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.env import project_root


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path or project_root() / "params.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no params file at {path}")
    return yaml.safe_load(path.read_text()) or {}


def resolve(path: str | Path) -> Path:
    """Paths in params.yaml are relative to the project root."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p
