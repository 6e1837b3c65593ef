"""The quiet, offline environment every entry point runs in.

Prefect, MLflow, DVC and Hugging Face all phone home or write into the user's home by default.
`configure()` sets the variables that stop that (see research/stack.md) and keeps their state
inside the project's ignored folders. Values already set by the user win (setdefault), except
the telemetry switches, which are always off.

Team mode: when `make up` has written `var/stack/env` (PREFECT_API_URL, MLFLOW_TRACKING_URI of the
running servers), those values come before the embedded defaults; the user's own variables still win.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from unlearn_ops.utils import project_root

__all__ = ["configure", "project_root"]


def stack_dir(root: Path | None = None) -> Path:
    """Where `make up` keeps the servers' state and its `env` file: UNLEARN_STACK_DIR, else
    var/stack of the project (`root`, default: this checkout)."""
    return Path(os.environ.get("UNLEARN_STACK_DIR") or (root or project_root()) / "var" / "stack")


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (what `make up` writes; `set -a; . var/stack/env` reads the same file)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def configure(root: Path | None = None) -> None:
    root = Path(root or project_root())
    cache = root / ".cache"
    team = stack_dir() / "env"
    if team.is_file():
        for key, value in read_env_file(team).items():
            os.environ.setdefault(key, value)
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


def mode() -> dict[str, str]:
    """Which servers this process talks to: `team` (a Prefect server) or `embedded` (a temporary
    Prefect server per command), with the MLflow tracking URI and where the settings came from."""
    team = stack_dir() / "env"
    from_file = read_env_file(team) if team.is_file() else {}
    api = os.environ.get("PREFECT_API_URL", "")
    source = (str(team) if api and from_file.get("PREFECT_API_URL") == api else
              "environment" if api else "defaults")
    return {"mode": "team" if api else "embedded", "prefect_api": api or "temporary server per command",
            "prefect_ui": os.environ.get("PREFECT_UI_URL", api.removesuffix("/api")) if api else "",
            "mlflow": os.environ.get("MLFLOW_TRACKING_URI", ""), "source": source}


def server_problem(timeout: float = 3.0) -> str | None:
    """None when every configured server answers its health check, else one sentence naming the
    setting (PREFECT_API_URL or MLFLOW_TRACKING_URI), its value and what to do."""
    import urllib.error
    import urllib.request

    checks = []
    if api := os.environ.get("PREFECT_API_URL"):
        checks.append(("PREFECT_API_URL", api, api.rstrip("/") + "/health"))
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")):
        checks.append(("MLFLOW_TRACKING_URI", tracking, tracking.rstrip("/") + "/health"))
    for name, value, url in checks:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status == 200:
                    continue
                why = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            why = str(getattr(e, "reason", e))
        hint = ("start the servers with `make up` (or `make down` to go back to embedded mode)"
                if (stack_dir() / "env").is_file() else f"start that server or unset {name}")
        return f"{name}={value} does not answer its health check ({why}): {hint}"
    return None
