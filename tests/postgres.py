"""A PostgreSQL for the tests: the server CI starts (JAN_TEST_POSTGRES_URL), or one this module starts itself.

`python3 tests/postgres.py start` (what .ci/run does; standard library only, so it runs before the venv exists)
creates a cluster in a new temporary folder with initdb, starts it on a free loopback port with trust
authentication, and prints the folder and the URL; `python3 tests/postgres.py stop DIR` stops it. PostgreSQL
refuses to run as root, so as root both run as the `postgres` user (Debian's package creates it), which owns the
folder.

The suite (tests/conftest.py) takes the URL from JAN_TEST_POSTGRES_URL. Without it, under CI (CI=true) the
PostgreSQL tests fail: CI must have set it. Elsewhere they start a cluster of their own here, if PostgreSQL's
binaries are installed (Debian's `postgresql` package), and fail saying so if not: they never pass without a
PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

URL_VARIABLE = "JAN_TEST_POSTGRES_URL"
#: `pytest.mark.databases(*BOTH)` runs a test on both kinds of database (see tests/conftest.py).
BOTH = ("sqlite", "postgresql")
#: How long a fresh cluster may take to accept connections on a loaded 2-core machine (it takes about a second).
START_TIMEOUT_S = 120


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def as_owner(command: list[str]) -> list[str]:
    """Run as the `postgres` user when root (initdb and postgres refuse root), else as oneself."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> tuple[Path, str]:
    """Create and start a cluster in a new temporary folder; the folder and the URL (user and database postgres)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL's binaries (initdb, pg_ctl) are not installed: apt-get install -y postgresql")
    directory = Path(tempfile.mkdtemp(prefix="jan-postgres-"))  # in /tmp, which the postgres user can reach
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data, port = directory / "data", free_port()
    subprocess.run(as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, stdout=subprocess.DEVNULL)
    options = f"-h 127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    subprocess.run(as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-o", options,
                             "-w", "-t", str(START_TIMEOUT_S), "start"]), check=True, stdout=subprocess.DEVNULL)
    wait_for(port)
    return directory, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def wait_for(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"PostgreSQL did not listen on port {port} within {START_TIMEOUT_S}s")


def stop(directory: Path) -> None:
    bin_dir = binaries()
    subprocess.run(as_owner([str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-m", "fast", "stop"]),
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(directory, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """A new, empty database on the server of `admin_url`; its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"jan_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        print(*start())
    else:
        stop(Path(sys.argv[2]))
