"""The database engine: connection settings for SQLite, write transactions, and running the Alembic migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

#: How long a writer waits for SQLite's lock before failing, in milliseconds.
BUSY_TIMEOUT_MS = 30_000
#: Connections kept open; the WSGI bridge runs up to 64 requests at once.
POOL_SIZE = 16
POOL_OVERFLOW = 64


def create(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys, a busy timeout and explicit BEGINs."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    in_memory = url in ("sqlite://", "sqlite:///:memory:")  # one connection, or each would see its own database
    options = {"poolclass": StaticPool} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    engine = create_engine(url, connect_args={"check_same_thread": False}, **options)
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(dbapi_connection, _record) -> None:
    # The sqlite3 module's own transaction handling would delay BEGIN; _begin_sqlite emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    # A write must take the lock up front: a read transaction that later upgrades to a write
    # fails with "database is locked" at once when another writer got there first, whatever the timeout.
    # Sent straight to the driver: through exec_driver_sql it cost about half of a one-row read.
    immediate = connection.get_execution_options().get("immediate", False)
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any error."""
    with engine.connect().execution_options(immediate=True) as connection, connection.begin():
        yield connection


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read transaction, so several SELECTs see the same snapshot."""
    with engine.connect() as connection, connection.begin():
        yield connection


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (migrations/ ships as jan_server.migrations)."""
    config = Config()
    config.set_main_option("script_location", str(files("jan_server.migrations")))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
