"""A fork server for the crash tests: it imports the pipeline once (torch, Prefect, MLflow: ~15 s
on a busy 2-core machine), then forks one child process per `unlearn` command it is sent. Each
child is a real, separate process running the real CLI, so a fault point's SIGKILL kills exactly
one batch run; the server only waits for it and reports how it ended.

Protocol: one JSON object per line on stdin — {"args": [...], "env": {...}, "log": path} — starts a
child (stdout and stderr to `log`) and answers {"pid": …}; {"wait": pid} answers {"pid": …,
"rc": exit code, or minus the signal that killed it}. Forking is safe because the server never
starts a thread (checked at start-up): nothing but imports runs before a fork.
"""

from __future__ import annotations

import json
import os
import sys
import threading


def child(args: list[str], env: dict[str, str], log: str) -> None:
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from flows.cli import app

    try:  # click returns the exit code of `typer.Exit` when not standalone
        rc = app(args=args, prog_name="unlearn", standalone_mode=False)
        code = rc if isinstance(rc, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported through the exit code and the log
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    import flows.cli  # noqa: F401 - the whole pipeline, once
    import flows.deletion_batch  # noqa: F401
    import tasks.erasure  # noqa: F401
    import tasks.retention  # noqa: F401

    if threading.active_count() != 1:
        raise SystemExit(f"threads started at import ({threading.enumerate()}): forking would be unsafe")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if "wait" in msg:
            _, status = os.waitpid(msg["wait"], 0)
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            print(json.dumps({"pid": msg["wait"], "rc": rc}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            child(msg["args"], msg.get("env", {}), msg["log"])
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()
