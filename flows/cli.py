"""`unlearn` — the command line of unlearn-pipeline."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import typer

import flows  # noqa: F401  (sets the offline environment before prefect/mlflow load)

app = typer.Typer(help="Deletion requests in, verified and registered models out.", no_args_is_help=True)


def _fmt_metric(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    return "-" if v is None else f"{v:.4f}"


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Registered models, their versions, aliases and key metrics."""
    from tasks.registry import registry_summary

    summary = registry_summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    if not summary:
        typer.echo("no registered models yet: run `make build` (or `dvc repro`)")
        return
    for rm in summary:
        typer.echo(f"{rm['name']}  aliases: " + ", ".join(f"{a}=v{v}" for a, v in sorted(rm["aliases"].items())))
        typer.echo(f"  {'version':>7}  {'aliases':<20} {'test_acc':>8}  {'method':<22} {'created':<20} lineage")
        for v in rm["versions"]:
            created = datetime.fromtimestamp(v["created"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            tags = v["tags"]
            typer.echo(f"  {v['version']:>7}  {','.join(v['aliases']) or '-':<20} "
                       f"{_fmt_metric(v['metrics'], 'test_accuracy'):>8}  {tags.get('method', '-'):<22} "
                       f"{created:<20} {tags.get('lineage', '-')}"
                       + (f" batch={tags['batch_id']}" if "batch_id" in tags else ""))


@app.command()
def demo() -> None:
    """The main job after the build: show the registry state."""
    status(as_json=False)


if __name__ == "__main__":
    app()
