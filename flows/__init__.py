"""Prefect flows: the build stages, the deletion batch, the CLI."""

from tasks.env import configure

configure()
