"""Thin Prefect tasks around unlearn_ops: validation (GX), registry (MLflow), versioning (DVC) …"""

from tasks.env import configure

configure()
