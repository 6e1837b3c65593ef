"""flows/server.py: one Prefect server for a whole command, always stopped at the end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows import server


def test_one_server_for_the_block_and_its_children_stopped_even_on_error(monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with server.prefect_server(log_file=tmp_path / "server.log", echo=lambda _: None) as url:
            seen["url"] = url
            assert server.healthy(url)
            child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['PREFECT_API_URL'])"],
                                   capture_output=True, text=True, check=True)
            assert child.stdout.strip() == url                     # the DVC stages and batches use it
            from prefect.settings import PREFECT_API_URL

            assert PREFECT_API_URL.value() == url                  # and so do flows in this process
            raise RuntimeError("boom")
    assert not server.healthy(seen["url"])                          # stopped on the way out
    assert "PREFECT_API_URL" not in __import__("os").environ


def test_a_server_the_user_runs_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with server.prefect_server(echo=lambda _: None) as url:
        assert url == "http://127.0.0.1:4200/api"


def test_main_returns_the_commands_exit_code_and_needs_a_command(monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")   # no server start: the wrapper's own logic
    assert server.main(["--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert server.main(["--"]) == 2 and "usage" in capsys.readouterr().err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_the_command_and_the_server(tmp_path, sig):
    import os
    import re
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    proc = subprocess.Popen([sys.executable, "-m", "flows.server", "--", sys.executable, "-c",
                             "import time; time.sleep(600)"], stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)   # its own group: a Ctrl-C reaches the group
    line = proc.stderr.readline()
    url = re.search(r"(http://127\.0\.0\.1:\d+)", line).group(1) + "/api"
    assert server.healthy(url), line
    started = time.perf_counter()
    if sig == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)       # what Ctrl-C does: the whole foreground group
    else:
        proc.send_signal(signal.SIGTERM)         # `kill PID` of the wrapper alone
    # Ctrl-C: 130, or killed by the SIGINT itself when it lands after the command ended (-2)
    assert proc.wait(timeout=60) in ((130, -signal.SIGINT) if sig == "SIGINT" else (143,))
    assert time.perf_counter() - started < 45 and not server.healthy(url)


@pytest.mark.parametrize("sig,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_the_server_starts_stops_it_and_never_starts_the_command(monkeypatch, tmp_path, sig, code):
    """The SIGTERM lands inside the server's start (library code, where a raised exception could be
    rewrapped): the wrapper notes it, stops the server and returns 143 without running the command.
    Ctrl-C is handled the same way (130)."""
    import contextlib
    import os
    import signal

    stopped = []

    @contextlib.contextmanager
    def starting_server(echo):
        os.kill(os.getpid(), getattr(signal, sig))   # delivered here, as if during `temporary_settings`
        try:
            yield "http://127.0.0.1:1/api"
        finally:
            stopped.append(True)

    monkeypatch.setattr(server, "prefect_server", starting_server)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    ran = tmp_path / "ran"
    returned = server.main(["--", sys.executable, "-c", f"open({str(ran)!r}, 'w')"])
    assert returned == code and stopped == [True] and not ran.exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous   # handlers restored
