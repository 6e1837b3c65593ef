"""The project's own PostgreSQL cluster (Debian's `postgresql` binaries) under <stack dir>/pg.

`initdb` refuses to run as root, so when `make up` runs as root the cluster belongs to the
`postgres` system user (created by the Debian package) and every pg binary runs through
`runuser -u postgres`; as any other user the cluster is that user's. Authentication is
scram-sha-256 with a generated password kept in pg/password (readable by its owner only);
the server listens on 127.0.0.1 only and has no Unix socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import subprocess
from pathlib import Path

from stack.config import HOST, StackConfig, StackError, write_private

DATABASES = ("prefect", "mlflow")


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin (UNLEARN_PG_BIN overrides)."""
    if given := os.environ.get("UNLEARN_PG_BIN"):
        return Path(given)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                         "`apt-get install -y postgresql` (what `make setup` does as root), "
                         "or set UNLEARN_STACK_DATABASE_URL to an existing PostgreSQL server")
    return Path(found[-1]).parent


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("initdb refuses to run as root and there is no `postgres` system user to run it: "
                         "install Debian's `postgresql` package (it creates the user) or run `make up` "
                         "as a normal user") from None
    return ["runuser", "-u", "postgres", "--", *argv]


def _check_reachable(path: Path) -> None:
    """As root the cluster belongs to `postgres`, which must be able to enter every parent folder."""
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise StackError(f"the `postgres` user cannot enter {parent} (a private folder), so it cannot run the "
                             f"cluster in {path}: set UNLEARN_STACK_DIR to a folder under a world-enterable one")


def _chown_to_owner(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)


def _run(argv: list[str], what: str) -> str:
    out = subprocess.run(_as_owner(argv), capture_output=True, text=True)
    if out.returncode != 0:
        raise StackError(f"{what} failed: {(out.stderr or out.stdout).strip()[-800:]}")
    return out.stdout


def data_dir(cfg: StackConfig) -> Path:
    return cfg.pg_dir / "data"


def init(cfg: StackConfig) -> bool:
    """Create the cluster once (True when it was created now)."""
    data = data_dir(cfg)
    if (data / "PG_VERSION").is_file():
        return False
    cfg.pg_dir.mkdir(parents=True, exist_ok=True)
    _check_reachable(cfg.pg_dir)
    password = secrets.token_urlsafe(24)
    write_private(cfg.pg_dir / "password", password + "\n")
    pwfile = cfg.pg_dir / "initdb.pw"
    write_private(pwfile, password + "\n")
    data.mkdir(mode=0o700, exist_ok=True)
    _chown_to_owner(data)
    _chown_to_owner(pwfile)
    try:
        _run([str(bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
              "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"], "initdb")
    finally:
        pwfile.unlink(missing_ok=True)
    return True


def start(cfg: StackConfig) -> int:
    """Start the cluster (pg_ctl waits until it accepts connections); returns the postmaster PID."""
    log = cfg.log_dir / "postgres.log"
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the server (running as postgres) appends to its log
        log.touch()
        _chown_to_owner(log)
    options = f"-p {cfg.pg_port} -c listen_addresses={HOST} -c unix_socket_directories=''"
    _run([str(bin_dir() / "pg_ctl"), "-D", str(data_dir(cfg)), "-o", options, "-l", str(log), "-w", "-t", "60",
          "start"], f"PostgreSQL on {HOST}:{cfg.pg_port} (UNLEARN_STACK_PG_PORT)")
    return postmaster_pid(cfg)


def postmaster_pid(cfg: StackConfig) -> int:
    return int((data_dir(cfg) / "postmaster.pid").read_text().split()[0])


def stop(cfg: StackConfig) -> None:
    if (data_dir(cfg) / "postmaster.pid").is_file():
        _run([str(bin_dir() / "pg_ctl"), "-D", str(data_dir(cfg)), "-m", "fast", "-w", "-t", "60", "stop"],
             "pg_ctl stop")


def _connect(url: str, setting: str):
    import psycopg2

    try:
        return psycopg2.connect(url + "/postgres", connect_timeout=5)
    except psycopg2.Error as e:
        shown = url.split("@")[-1]
        raise StackError(f"{setting}: cannot connect to the PostgreSQL server at {shown}: "
                         f"{str(e).strip().splitlines()[0]}") from None


def healthy(cfg: StackConfig) -> bool:
    try:
        _connect(cfg.server_url(), "").close()
        return True
    except (StackError, OSError):
        return False


def ensure_databases(cfg: StackConfig) -> None:
    """The `prefect` and `mlflow` databases exist (created when missing)."""
    import psycopg2

    setting = "UNLEARN_STACK_DATABASE_URL" if cfg.database_url else "the project's PostgreSQL (var/stack/pg)"
    conn = _connect(cfg.server_url(), setting)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            present = {row[0] for row in cur.fetchall()}
            for name in DATABASES:
                if name not in present:
                    cur.execute(f'CREATE DATABASE "{name}"')
    except psycopg2.Error as e:  # e.g. a given server whose user may not create databases
        raise StackError(f"{setting}: cannot create the databases {DATABASES}: {str(e).strip()}") from None
    finally:
        conn.close()
