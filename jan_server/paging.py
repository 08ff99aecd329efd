"""Cursor pagination shared by the list operations: limit, order by created_at (ties by insertion), after/before ids."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, ColumnElement, Table, and_, or_, select, true

from jan_server.errors import InvalidRequestError

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


def fetch(connection: Connection, table: Table, scope: ColumnElement, page: Page) -> tuple[list, bool]:
    """The rows of `table` within `scope` for one page, in the page's order, and whether more follow.

    A cursor must name a row within the scope: an unknown `after`/`before` id is a 400, since a client
    paging through a list whose cursor row was deleted would otherwise silently restart from the top.
    """
    ascending = page.order == "asc"
    where = [scope]
    if page.after:
        where.append(_beyond(connection, table, scope, page.after, "after", forward=ascending))
    if page.before:
        where.append(_beyond(connection, table, scope, page.before, "before", forward=not ascending))
    # `before` pages walk backwards from the cursor: fetch in reverse, then flip into the page's order.
    reverse = bool(page.before) and not page.after
    forward = ascending != reverse
    keys = (table.c.created_at, table.c.seq) if forward else (table.c.created_at.desc(), table.c.seq.desc())
    rows = connection.execute(select(table).where(*where).order_by(*keys).limit(page.limit + 1)).mappings().all()
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    return (rows[::-1] if reverse else rows), has_more


def _beyond(connection: Connection, table: Table, scope: ColumnElement, cursor: str, param: str, forward: bool) -> ColumnElement:
    """Rows strictly after (forward) or before the cursor row in ascending (created_at, seq) order."""
    found = connection.execute(select(table.c.created_at, table.c.seq).where(scope, table.c.id == cursor)).first()
    if found is None:
        raise InvalidRequestError(f"No object with id '{cursor}' in this list to page from.", param=param)
    created_at, seq = found
    if forward:
        return or_(table.c.created_at > created_at, and_(table.c.created_at == created_at, table.c.seq > seq))
    return or_(table.c.created_at < created_at, and_(table.c.created_at == created_at, table.c.seq < seq))


#: The scope of lists that span a whole table.
ALL_ROWS = true()
