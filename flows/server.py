"""One Prefect server for a whole command that runs several flows in several processes (`unlearn demo`).

Without PREFECT_API_URL every Python process that runs a flow starts its own temporary server
(6–15 s each on 2 cores: `make demo` started five). `prefect_server()` starts one `prefect server
start` on a free loopback port, points PREFECT_API_URL at it for this process (settings) and its
children (environment: the DVC stages, the batches), and stops it when the block ends — normally,
on an error or on Ctrl-C. A server the user already runs (PREFECT_API_URL set) is used as it is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # noqa: S310 - loopback only
            return r.status == 200
    except OSError:
        return False


def _prefect() -> str:
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else "prefect"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn and its children), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def prefect_server(log_file: str | Path | None = None, echo=print) -> Iterator[str]:
    """PREFECT_API_URL of a server for the block (see the module docstring); yields the API URL."""
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = Path(log_file) if log_file else Path(os.environ.get("PREFECT_HOME", ".prefect")) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: Ctrl-C reaches us, we stop it
    try:
        while not healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with code {proc.returncode}; see {log_path}")
            if time.perf_counter() - started > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"prefect server not healthy after {STARTUP_TIMEOUT_S:.0f} s; see {log_path}")
            time.sleep(0.25)
        echo(f"Prefect server for this run: {url.removesuffix('/api')} (UI; started in "
             f"{time.perf_counter() - started:.1f} s, stopped at the end)")
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        with _uninterrupted():  # a second Ctrl-C must not leave the server running
            _stop(proc)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.server -- CMD ...`: run CMD with PREFECT_API_URL pointing at one server for
    all of its processes; the server stops when CMD ends, fails or is interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m flows.server -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    import tasks.env

    tasks.env.configure()

    # Ctrl-C and SIGTERM are noted, never raised: an exception raised from a handler lands in
    # whatever runs then, and library code may rewrap it (pydantic turned a SystemExit inside
    # `temporary_settings` into its own error: exit 1, the CI failure of stop 26; a KeyboardInterrupt
    # there did the same) or leave a just-started command running with no one waiting for it.
    received: list[int] = []
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if child is not None:
            _end_soon(child, signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with prefect_server(echo=lambda line: print(line, file=sys.stderr, flush=True)):
            if received:             # during the server's start: it stops, the command never starts
                return 128 + received[0]
            child = subprocess.Popen(args)
            if received:             # between the start and `child` being set: the handler saw no child
                _end_soon(child, received[0])
            code = child.wait()
    finally:
        for sig, handler in previous.items():   # main() called in-process (tests) leaves no trace
            signal.signal(sig, handler)
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code  # a command killed by signal N: 128 + N, as a shell says


def _end_soon(child: subprocess.Popen, signum: int) -> None:
    """SIGTERM (to us alone) is passed on to the command; Ctrl-C reached the whole foreground group,
    the command too, so it is let end by itself. Either way SIGKILL if it still runs after 30 s (a
    command started in the instant of the Ctrl-C may never have seen it)."""
    if signum == signal.SIGTERM:
        child.terminate()
    timer = threading.Timer(30.0, child.kill)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
