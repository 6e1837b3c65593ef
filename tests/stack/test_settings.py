"""Team-mode settings: var/stack/env is read unless the user set the variables, the mode is named,
and every bad setting stops with one line naming it (no traceback). No servers needed."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flows.cli import app
from stack.config import CODE_ROOT, HOST, free_port
from tasks import env

runner = CliRunner()


@pytest.fixture()
def team_env_file(tmp_path, monkeypatch):
    """A var/stack/env as `make up` writes it, in a stack folder of this test's own."""
    monkeypatch.setenv("UNLEARN_STACK_DIR", str(tmp_path))
    for var in ("PREFECT_API_URL", "PREFECT_UI_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)  # restored (to unset) after the test
    (tmp_path / "env").write_text("PREFECT_API_URL=http://127.0.0.1:4299/api\nPREFECT_UI_URL=http://127.0.0.1:4299\n"
                                  "MLFLOW_TRACKING_URI=http://127.0.0.1:5099\n")
    return tmp_path / "env"


def test_configure_takes_the_servers_from_the_env_file(team_env_file):
    env.configure()
    import os

    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4299/api"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5099"
    assert env.mode() == {"mode": "team", "prefect_api": "http://127.0.0.1:4299/api",
                          "prefect_ui": "http://127.0.0.1:4299", "mlflow": "http://127.0.0.1:5099",
                          "source": str(team_env_file)}


def test_the_users_own_variables_win_over_the_env_file(team_env_file, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mine.db")
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.5:4200/api")
    env.configure()
    m = env.mode()
    assert m["mlflow"] == "sqlite:///mine.db" and m["prefect_api"] == "http://10.0.0.5:4200/api"
    assert m["source"] == "environment"


def test_without_the_env_file_the_mode_is_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    env.configure()
    assert env.mode()["mode"] == "embedded"
    assert env.server_problem() is None  # nothing to check: a temporary server per command


def one_clear_line(output: str, setting: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    assert lines[0].startswith("error: ") and setting in lines[0], output
    return lines[0]


def test_a_server_that_does_not_answer_is_named(team_env_file, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{HOST}:{port}")
    monkeypatch.setenv("PREFECT_API_URL", f"http://{HOST}:{free_port()}/api")
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 1
    line = one_clear_line(status.output, "PREFECT_API_URL")  # checked first; MLflow next
    assert "make up" in line
    monkeypatch.delenv("PREFECT_API_URL")
    batch = runner.invoke(app, ["batch", "run"])
    assert batch.exit_code == 1
    assert f":{port}" in one_clear_line(batch.output, "MLFLOW_TRACKING_URI")


def stack_up(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "UNLEARN_STACK_DIR": str(tmp_path / "stack"), "UNLEARN_PROJECT_DIR": str(tmp_path),
           "UNLEARN_STACK_PG_PORT": str(free_port()), "UNLEARN_STACK_PREFECT_PORT": str(free_port()),
           "UNLEARN_STACK_MLFLOW_PORT": str(free_port()), **settings}
    return subprocess.run([sys.executable, "-m", "stack", "up"], env=env, cwd=CODE_ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_wrong_database_url_is_named_and_nothing_starts(tmp_path):
    out = stack_up(tmp_path, UNLEARN_STACK_DATABASE_URL=f"postgresql://nobody:wrong@{HOST}:{free_port()}")
    assert out.returncode == 1
    line = one_clear_line(out.stderr, "UNLEARN_STACK_DATABASE_URL")
    assert "cannot connect" in line and "wrong" not in line  # the password is not printed
    assert not list((tmp_path / "stack").glob("run/*.json"))


def test_a_bad_port_setting_is_named(tmp_path):
    out = stack_up(tmp_path, UNLEARN_STACK_PG_PORT="fifty")
    assert out.returncode == 1
    one_clear_line(out.stderr, "UNLEARN_STACK_PG_PORT")


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        out = stack_up(tmp_path, UNLEARN_STACK_PREFECT_PORT=str(taken.getsockname()[1]))
    assert out.returncode == 1
    assert "in use" in one_clear_line(out.stderr, "UNLEARN_STACK_PREFECT_PORT")
    assert not list((tmp_path / "stack").glob("run/*.json"))  # PostgreSQL was not started either
