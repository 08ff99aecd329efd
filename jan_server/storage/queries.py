"""What each resource's queries share: the engine, one write lock, write transactions and lookups by id."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, Select, Table, bindparam, select

from jan_server.errors import NotFoundError
from jan_server.storage import db


@functools.cache
def by_id(table: Table) -> Select:
    """The row with id `:id`, built once per table (building a SELECT costs more than running it)."""
    return select(table).where(table.c.id == bindparam("id"))


def require(connection: Connection, table: Table, object_id: str, kind: str):
    """The row of `table` with `object_id`, or NotFoundError for a `kind`."""
    row = connection.execute(by_id(table), {"id": object_id}).mappings().first()
    if row is None:
        raise NotFoundError(kind, object_id)
    return row


def require_child(connection: Connection, statement: Select, params: dict, parent: Table, parent_id: str, parent_kind: str, kind: str):
    """The row `statement` finds (an object in its parent, such as a message in a thread), or NotFoundError: for
    the parent if that is what is missing, else for a `kind` with `params["id"]`."""
    row = connection.execute(statement, params).mappings().first()
    if row is None:
        require(connection, parent, parent_id, parent_kind)
        raise NotFoundError(kind, params["id"])
    return row


class Queries:
    """The base of one resource's queries. Each public method of a subclass is one transaction; unknown ids
    raise NotFoundError, rule violations InvalidRequestError."""

    def __init__(self, engine: Engine, write_lock: threading.Lock):
        self.engine = engine
        self._write_lock = write_lock

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction. SQLite runs one writer at a time: queueing this process's writers on one lock
        (shared by every resource) hands the turn over at once, where SQLite's busy handler would poll with
        sleeps of up to 100 ms."""
        with self._write_lock, db.writing(self.engine) as connection:
            yield connection
