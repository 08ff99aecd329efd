"""Cursor pagination shared by the list operations: limit, order by created_at (ties by insertion), after/before ids.

Statements are built once per shape and reused with bound values: building a SELECT costs more than running it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Select, Table, and_, bindparam, or_, select

from jan_server.errors import InvalidRequestError, NotFoundError
from jan_server.storage import db

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    limit: int = DEFAULT_LIMIT
    order: str = "desc"
    after: str | None = None
    before: str | None = None

    def __post_init__(self):
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
        if self.order not in ("asc", "desc"):
            raise InvalidRequestError("order must be 'asc' or 'desc'.", param="order")


def fetch(connection: Connection, table: Table, page: Page, scope: str | tuple[str, ...] | None = None, scope_value=None) -> tuple[list, bool]:
    """The rows of `table` (those whose column `scope` equals `scope_value`, if given; or whose columns, a tuple, equal
    the values of a tuple) for one page, and whether more follow.

    A cursor must name a row of the same list: an unknown `after`/`before` id is a 404 `cursor_not_found`, since
    a client paging through a list whose cursor row was deleted would otherwise silently start again from the top.
    """
    scoped = _scoped(scope, scope_value)
    scope = tuple(scoped)
    values = {**scoped, "limit": page.limit + 1}
    for param in ("after", "before"):
        cursor = getattr(page, param)
        if cursor:
            found = connection.execute(_cursor_statement(table, scope), {**scoped, "id": cursor}).first()
            if found is None:
                raise NotFoundError("cursor", cursor, param=param)
            values[f"{param}_created_at"], values[f"{param}_seq"] = found
    # `before` alone walks backwards from the cursor: fetch in reverse, then flip into the page's order.
    reverse = bool(page.before) and not page.after
    statement = _page_statement(table, scope, page.order == "asc", reverse, bool(page.after), bool(page.before))
    rows = connection.execute(statement, values).mappings().all()
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    return (rows[::-1] if reverse else rows), has_more


def fetch_first(engine: Engine, table: Table, page: Page, scope: str | None = None, scope_value=None) -> tuple[list, bool]:
    """fetch() for a page without cursors: one statement, so it needs no snapshot (see db.read_one_statement)."""
    scoped = _scoped(scope, scope_value)
    statement = _page_statement(table, tuple(scoped), page.order == "asc", False, False, False)
    rows = db.read_one_statement(engine, statement, {**scoped, "limit": page.limit + 1})
    return rows[: page.limit], len(rows) > page.limit


def _scoped(scope: str | tuple[str, ...] | None, value) -> dict:
    """{column: value} of the scope: one column and value, or a tuple of each."""
    if scope is None:
        return {}
    return dict(zip(scope, value)) if isinstance(scope, tuple) else {scope: value}


def _where_scope(statement: Select, table: Table, scope: tuple[str, ...]) -> Select:
    for column in scope:
        statement = statement.where(table.c[column] == bindparam(column))
    return statement


@functools.cache
def _cursor_statement(table: Table, scope: tuple[str, ...]) -> Select:
    return _where_scope(select(table.c.created_at, table.c.seq).where(table.c.id == bindparam("id")), table, scope)


@functools.cache
def _page_statement(table: Table, scope: tuple[str, ...], ascending: bool, reverse: bool, after: bool, before: bool) -> Select:
    statement = _where_scope(select(table), table, scope)
    if after:
        statement = statement.where(_beyond(table, "after", forward=ascending))
    if before:
        statement = statement.where(_beyond(table, "before", forward=not ascending))
    if ascending != reverse:
        statement = statement.order_by(table.c.created_at, table.c.seq)
    else:
        statement = statement.order_by(table.c.created_at.desc(), table.c.seq.desc())
    return statement.limit(bindparam("limit"))


def _beyond(table: Table, cursor: str, forward: bool):
    """Rows strictly after (forward) or before the cursor row in ascending (created_at, seq) order."""
    created_at, seq = bindparam(f"{cursor}_created_at"), bindparam(f"{cursor}_seq")
    if forward:
        return or_(table.c.created_at > created_at, and_(table.c.created_at == created_at, table.c.seq > seq))
    return or_(table.c.created_at < created_at, and_(table.c.created_at == created_at, table.c.seq < seq))
