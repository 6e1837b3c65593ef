"""`unlearn` — the command line of unlearn-pipeline."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import typer

import flows  # noqa: F401  (sets the offline environment before prefect/mlflow load)

app = typer.Typer(help="Deletion requests in, verified and registered models out.", no_args_is_help=True)
request_app = typer.Typer(help="Submit and list deletion requests.", no_args_is_help=True)
batch_app = typer.Typer(help="Run deletion batches.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit certificates and their hash chain.", no_args_is_help=True)
app.add_typer(request_app, name="request")
app.add_typer(batch_app, name="batch")
app.add_typer(audit_app, name="audit")
ROOT = typer.Option(None, "--root", help="project folder (default: this checkout)")


def _servers_answer() -> None:
    """In team mode, stop with one line naming the setting when a server does not answer."""
    from tasks.env import server_problem

    if problem := server_problem():
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)


def _fmt_metric(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    return "-" if v is None else f"{v:.4f}"


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Which servers are in use (team / embedded), registered models, their versions, aliases and key metrics."""
    from tasks.env import mode
    from tasks.registry import registry_summary

    _servers_answer()
    m = mode()
    summary = registry_summary()
    if as_json:
        typer.echo(json.dumps({"mode": m, "models": summary}, indent=2, default=str))
        return
    typer.echo(f"mode: team — Prefect {m['prefect_ui']} (API {m['prefect_api']}), MLflow {m['mlflow']} "
               f"(from {m['source']})" if m["mode"] == "team" else
               f"mode: embedded — a temporary Prefect server per command, MLflow {m['mlflow']}")
    if not summary:
        typer.echo("no registered models yet: run `make build` (or `dvc repro`)")
        return
    for rm in summary:
        typer.echo(f"{rm['name']}  aliases: " + ", ".join(f"{a}=v{v}" for a, v in sorted(rm["aliases"].items())))
        typer.echo(f"  {'version':>7}  {'aliases':<20} {'test_acc':>8}  {'method':<22} {'created':<20} lineage")
        for v in rm["versions"]:
            created = datetime.fromtimestamp(v["created"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            tags, metrics = v["tags"], v["metrics"]
            acc = metrics.get("test_accuracy", metrics.get("items.test_accuracy", metrics.get("class.test_accuracy")))
            typer.echo(f"  {v['version']:>7}  {','.join(v['aliases']) or '-':<20} "
                       f"{'-' if acc is None else f'{acc:.4f}':>8}  {tags.get('method', '-'):<22} "
                       f"{created:<20} {tags.get('lineage', '-')}"
                       + (f" batch={tags['batch_id']} verdict={tags.get('verdict')}" if "batch_id" in tags else ""))


# ------------------------------------------------------------------ requests
@request_app.command("submit")
def request_submit(files: list[Path] = typer.Argument(..., exists=True, dir_okay=False),
                   root: Path | None = ROOT) -> None:
    """Validate request files now and record them in the ledger (they join the next batch).
    One line per file, each in the ledger; exits 1 when any is rejected."""
    _servers_answer()
    from tasks.intake import file_away, intake_documents, intake_limits, read_file, source
    from tasks.registry import is_registered
    from tasks.workspace import Workspace
    from unlearn_ops.ledger import Ledger

    ws = Workspace.at(root)
    limits = intake_limits(ws)
    names = [source("cli", f) for f in files]
    documents = [(read_file(f, limits), name) for f, name in zip(files, names, strict=True)]
    checked = intake_documents(ws, Ledger(ws.ledger_path), documents, is_registered)
    for f, name, c in zip(files, names, checked, strict=True):
        if c.reason:
            file_away(ws, f, c, move=False, limits=limits)  # the user's file stays; a copy is quarantined
            typer.echo(f"REJECTED {c.entry.request_id} ({name[4:]}): {c.reason}", err=True)
        else:
            typer.echo(f"accepted {c.entry.request_id} ({name[4:]}): {c.request.kind} on {c.request.model}, "
                       f"{len(c.sample_ids)} samples")
    if any(c.reason for c in checked):
        raise typer.Exit(1)


@request_app.command("list")
def request_list(state: str | None = typer.Option(None, help="only requests in this state"),
                 as_json: bool = typer.Option(False, "--json"), root: Path | None = ROOT) -> None:
    """Every request in the ledger with its state and reason."""
    from tasks.workspace import Workspace
    from unlearn_ops.ledger import Ledger, LedgerError

    ws = Workspace.at(root)
    try:
        entries = Ledger(ws.ledger_path).entries(state=state)
    except LedgerError as e:
        raise typer.BadParameter(str(e)) from e
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in e.__dict__.items() if k != "document"} | {"request": e.payload}
                               for e in entries], indent=2, default=str))
        return
    typer.echo(f"{'request':<28} {'kind':<8} {'model':<20} {'state':<17} {'batch':<34} reason")
    for e in entries:
        typer.echo(f"{e.request_id:<28} {e.kind or '-':<8} {e.model or '-':<20} {e.state:<17} {e.batch_id or '-':<34} "
                   f"{e.reason or ''}")


APPROVER = typer.Option(..., "--approver", help="your name: the ledger and the certificate record it")


def _decide(request_id: str, approve: bool, approver: str, reason: str, root: Path | None) -> None:
    from tasks.approval import ApprovalError, decide
    from tasks.workspace import Workspace

    try:
        entry, resumed = decide(Workspace.at(root), request_id, approve, approver, reason)
    except ApprovalError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from e
    typer.echo(f"{entry.request_id}: {entry.state} ({entry.reason})")
    typer.echo(f"resumed flow run {resumed}, which was paused for this request" if resumed else
               "no run is paused for it: the next `unlearn batch run` processes it" if approve else
               "no run is paused for it")


@request_app.command("approve")
def request_approve(request_id: str, approver: str = APPROVER,
                    reason: str = typer.Option("", "--reason", help="why (recorded with the decision)"),
                    root: Path | None = ROOT) -> None:
    """Approve a request that waits for a person (a class or concept deletion, params.yaml `approval`);
    resumes the batch run paused for it, if one is."""
    _decide(request_id, True, approver, reason, root)


@request_app.command("deny")
def request_deny(request_id: str, approver: str = APPROVER,
                 reason: str = typer.Option(..., "--reason", help="why: the request is rejected with it"),
                 root: Path | None = ROOT) -> None:
    """Deny a request that waits for a person: it is rejected with your name and reason."""
    _decide(request_id, False, approver, reason, root)


# ------------------------------------------------------------------ batches
@batch_app.command("run")
def batch_run(batch_id: str | None = typer.Option(None, "--batch-id", help="resume / show this batch"),
              wait: bool = typer.Option(True, "--wait/--no-wait",
                                        help="pause for approvals (params.yaml `approval`) or leave them for a later run"),
              root: Path | None = ROOT) -> None:
    """Run the deletion_batch flow now (inbox + pending requests)."""
    _servers_answer()
    from flows.deletion_batch import deletion_batch

    result = deletion_batch(batch_id=batch_id or "", root=str(root) if root else None, wait_for_approval=wait)
    if any(b.get("state") == "failed" for b in result.get("batches") or [result]):
        raise typer.Exit(2)


@app.command()
def serve(cron: str | None = typer.Option(None, help="cron schedule (default: params.yaml batch.schedule_cron)"),
          name: str = typer.Option("scheduled", help="deployment name")) -> None:
    """Serve the deletion_batch deployment on a schedule against PREFECT_API_URL (blocks).

    Start a server first (`prefect server start` or `make ui`); then trigger runs from the UI
    (deployment `deletion_batch/scheduled`, parameter `requests`) or wait for the schedule."""
    import os

    from flows.deletion_batch import deletion_batch
    from tasks.workspace import Workspace

    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("PREFECT_API_URL is not set: start `prefect server start` (or `make ui`) and export "
                   "PREFECT_API_URL=http://127.0.0.1:4200/api", err=True)
        raise typer.Exit(1)
    cron = cron or Workspace.at().params["batch"]["schedule_cron"]
    typer.echo(f"serving deletion_batch/{name} with cron {cron!r}")
    deletion_batch.serve(name=name, cron=cron, parameters={"requests": []})


# ------------------------------------------------------------------ audit
@audit_app.command("verify")
def audit_verify(root: Path | None = ROOT) -> None:
    """Check the certificate hash chain; reports the first broken link."""
    from tasks.workspace import Workspace
    from unlearn_ops.audit import AuditLog

    ws = Workspace.at(root)
    result = AuditLog(ws.audit_log, ws.certificates).verify()
    typer.echo(("OK: " if result.ok else "BROKEN: ") + result.message)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("erasure")
def audit_erasure(batch_id: str, as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
                  root: Path | None = ROOT) -> None:
    """Search everything the project keeps for a batch's forgotten samples; exit 1 if any copy remains."""
    from tasks.erasure import erasure_scan, format_erasure
    from tasks.workspace import Workspace

    try:
        result = erasure_scan(Workspace.at(root), batch_id)
    except FileNotFoundError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_erasure(result))
    if not result["passed"]:
        raise typer.Exit(1)


@audit_app.command("lm-facts")
def audit_lm_facts(subject: str, model: str = typer.Option("smollm2-facts", help="registered language model"),
                   alias: str = typer.Option("champion", help="the alias to ask"),
                   as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
                   root: Path | None = ROOT) -> None:
    """Ask the served LM (the registry's pyfunc) every question of its facts world: what it still
    states about SUBJECT (e.g. person-002), about the other members, and about never-seen people."""
    from tasks.lm_facts import format_served_facts, served_facts
    from tasks.workspace import Workspace

    ws = Workspace.at(root)
    section = ws.params["models"].get(model)
    if section is None or section.get("family") != "lm":
        typer.echo(f"{model!r} is not a language model of params.yaml `models`", err=True)
        raise typer.Exit(2)
    try:
        result = served_facts(model, ws.root / section["store_dir"], subject, alias)
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    metrics = ws.root / "metrics" / "llm.json"
    build = json.loads(metrics.read_text()).get("member_fact_recall") if metrics.is_file() else None
    typer.echo(json.dumps(result, indent=2) if as_json else format_served_facts(result, build))


@audit_app.command("show")
def audit_show(batch_id: str, root: Path | None = ROOT) -> None:
    """Print a batch's certificate (Markdown)."""
    from tasks.workspace import Workspace

    path = Workspace.at(root).certificates / f"{batch_id}.md"
    if not path.is_file():
        typer.echo(f"no certificate for batch {batch_id!r} in {path.parent}", err=True)
        raise typer.Exit(1)
    typer.echo(path.read_text())


# ------------------------------------------------------------------ demo
@app.command()
def demo(root: Path | None = ROOT,
         examples: Path = typer.Option(Path("examples/requests"), "--examples",
                                       help="folder of waves (sub-folders of request files), relative to the root")) -> None:
    """The main job after the build: submit the example requests wave by wave, run a batch for each,
    print the result. A request that needs a person's approval (a class deletion) is approved by
    the demo itself, as approver `demo`, through `unlearn request approve`'s code path."""
    _servers_answer()
    from flows.deletion_batch import deletion_batch
    from tasks.approval import decide
    from tasks.workspace import Workspace

    ws = Workspace.at(root)
    folder = ws.path(examples)
    waves = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not waves:
        raise typer.BadParameter(f"{folder} holds no wave folders of request files", param_hint="--examples")
    status(as_json=False)
    # Waves, as they would arrive on different days: e.g. item deletions (and a malformed request)
    # first, then a class deletion — each batch uses the method chain its request kinds ask for.
    for wave in waves:
        examples = sorted(wave.glob("*.json"))
        ws.inbox.mkdir(parents=True, exist_ok=True)
        for f in examples:
            shutil.copy2(f, ws.inbox / f.name)
        typer.echo(f"\n=== {wave.name}: dropped {', '.join(f.name for f in examples)} into "
                   f"{ws.inbox.relative_to(ws.root)}/; running deletion_batch …")
        # never pause: the demo answers its own approvals below, and must not hang on anyone else's
        result = deletion_batch(root=str(ws.root), wait_for_approval=False)
        batches = result.get("batches", [])
        ours = [rid for rid in result.get("awaiting_approval", []) if rid in _request_ids(examples)]
        for rid in ours:
            entry, _ = decide(ws, rid, True, "demo", "make demo approves its own example request")
            typer.echo(f"demo: {entry.kind} request {rid} needs a person's approval; the demo approved it as "
                       f"approver `demo` (as `unlearn request approve {rid} --approver demo` does)")
        if ours:
            batches += deletion_batch(root=str(ws.root), wait_for_approval=False).get("batches", [])
        for b in batches:
            if b.get("certificate"):
                typer.echo(f"certificate: {b['certificate']['markdown']}")
    typer.echo("")
    status(as_json=False)
    audit_verify(root)


def _request_ids(files: list[Path]) -> set[str]:
    """The request IDs the demo's own files claim (unreadable ones claim none)."""
    ids = set()
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("request_id"), str):
            ids.add(doc["request_id"])
    return ids


def main() -> None:
    """The `unlearn` command: a params.yaml the pipeline cannot keep its promises with stops it with
    one line (exit 2), not a traceback."""
    from tasks.workspace import ConfigError

    try:
        app()
    except ConfigError as e:
        typer.echo(f"error: params.yaml: {e}", err=True)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
