"""The quiet, offline environment every entry point runs in.

Prefect, MLflow, DVC and Hugging Face all phone home or write into the user's home by default.
`configure()` sets the variables that stop that (see research/stack.md) and keeps their state
inside the project's ignored folders. Values already set by the user win (setdefault), except
the telemetry switches, which are always off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from unlearn_ops.utils import project_root

__all__ = ["configure", "project_root"]


def configure(root: Path | None = None) -> None:
    root = Path(root or project_root())
    cache = root / ".cache"
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "INFO",  # flows print progress (epochs, attempts) at INFO
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "XDG_CONFIG_HOME": str(cache / "config"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    forced = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    os.environ.update(forced)
    # GX logs an INFO line per ephemeral context ("Created temporary directory ..."): noise here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
