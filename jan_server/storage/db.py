"""The database engine: connection settings for SQLite, write transactions, and running the Alembic migrations.

Any other SQLAlchemy URL works too; PostgreSQL is the one the suite proves (through psycopg 3, the `postgres`
extra), with several servers on one database."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Select, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from jan_server.errors import UnavailableError

#: How long a write waits for SQLite's lock, in milliseconds, before it fails with 503. Only another process can
#: hold the lock (this one's writers queue on the store's own lock), and with SQLite the wait blocks the event loop
#: that runs the store (jan_server.web.bridge): so not long.
BUSY_TIMEOUT_MS = 5_000
#: The PostgreSQL advisory lock that servers starting together on one database take in turn to migrate it.
MIGRATION_LOCK = 0x6A616E  # "jan"


def create(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys, a busy timeout and explicit BEGINs."""
    if not url.startswith("sqlite"):
        return create_engine(driver_url(url), pool_pre_ping=True)
    # The server uses a SQLite store from its event loop only (jan_server.web.bridge), so SQLAlchemy's default pool
    # is plenty. An in-memory database needs its one connection, or each would see its own database.
    in_memory = url in ("sqlite://", "sqlite:///:memory:")
    options = {"poolclass": StaticPool} if in_memory else {}
    engine = create_engine(url, connect_args={"check_same_thread": False}, **options)
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


def driver_url(url: str) -> str:
    """`postgresql://...` means psycopg 3 (the `postgres` extra), where SQLAlchemy would pick psycopg2."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def _configure_sqlite(dbapi_connection, _record) -> None:
    # The sqlite3 module's own transaction handling would delay BEGIN; _begin_sqlite emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: switching a new file to WAL waits for the lock too
    _wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal(cursor) -> None:
    """Switch to WAL, waiting up to BUSY_TIMEOUT_MS: while another process switches the same new file, SQLite may
    say "database is locked" at once, without its busy handler (about 1 start in 100 of 4 processes at once)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _begin_sqlite(connection: Connection) -> None:
    # A write must take the lock up front: a read transaction that later upgrades to a write
    # fails with "database is locked" at once when another writer got there first, whatever the timeout.
    # Sent straight to the driver: through exec_driver_sql it cost about half of a one-row read.
    immediate = connection.get_execution_options().get("immediate", False)
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any error."""
    try:
        with engine.connect().execution_options(immediate=True) as connection, connection.begin():
            yield connection
    except (OperationalError, sqlite3.OperationalError) as exc:  # the driver's own when BEGIN IMMEDIATE waited in vain
        if "database is locked" not in str(exc):
            raise
        raise UnavailableError("The database is locked by another program; try again.", code="database_locked") from None


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read transaction, so several SELECTs see the same snapshot."""
    with engine.connect() as connection, connection.begin():
        yield connection


def read_one_statement(engine: Engine, statement: Select, params: Mapping) -> list[dict]:
    """The rows of a single SELECT, as dicts. One statement needs no snapshot transaction, so on SQLite it runs
    in autocommit mode straight on the `sqlite3` driver: no BEGIN/COMMIT, and none of SQLAlchemy's execution
    machinery, which costs several times the query (a one-row read: ~115 µs -> ~35 µs in-process). Fewer calls
    that release the GIL also matter under concurrent load: each re-acquisition waits behind other threads."""
    if engine.dialect.name != "sqlite":
        with reading(engine) as connection:
            return [dict(row) for row in connection.execute(statement, params).mappings()]
    sql, names, defaults, columns = _compiled(engine.dialect, statement)
    params = {**defaults, **params}
    connection = engine.raw_connection()  # the pool's checkout; close() returns it
    try:
        values = connection.driver_connection.execute(sql, [params[name] for name in names]).fetchall()
    finally:
        connection.close()
    return [{key: value if convert is None else convert(value) for (key, convert), value in zip(columns, row)} for row in values]


@functools.cache
def _compiled(dialect, statement: Select) -> tuple[str, list[str], dict, list[tuple[str, Callable | None]]]:
    """The SQL, the order of its bound parameters, the values of those the statement fixes itself (such as
    LIMIT's OFFSET 0), and each result column's key and SQLAlchemy type converter."""
    compiled = statement.compile(dialect=dialect)
    names = list(compiled.positiontup)
    defaults = {name: compiled.binds[name].value for name in names if not compiled.binds[name].required}
    columns = [(column.key, column.type.result_processor(dialect, None)) for column in statement.selected_columns]
    return compiled.string, names, defaults, columns


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (migrations/ ships as jan_server.migrations)."""
    config = Config()
    config.set_main_option("script_location", str(files("jan_server.migrations")))
    # Servers started together on one database migrate it in turn, each holding a lock until its commit: SQLite's
    # write lock from the first statement on (BEGIN IMMEDIATE), PostgreSQL's advisory lock.
    with engine.connect().execution_options(immediate=True) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
