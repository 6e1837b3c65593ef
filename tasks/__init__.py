"""Thin Prefect tasks around unlearn_ops: validation (GX), registry (MLflow), versioning (DVC) …"""

from tasks.env import configure
from tasks.progress import install

configure()
install()  # unlearn_ops loops report to the terminal and the Prefect UI (tasks/progress.py)
