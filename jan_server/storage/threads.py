"""Threads, their attached assistants and their messages as one list, returned as Jan-shaped dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from jan_server.errors import ConflictError, NotFoundError
from jan_server.storage import db, records
from jan_server.storage.messages import THREAD_MESSAGES, insert_messages, message_row
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, require
from jan_server.storage.tables import assistants, thread_assistants, threads

# Hot reads are built once and run with bound values.
THREAD_WITH_ATTACHED = (
    select(threads, thread_assistants.c.assistant_id, thread_assistants.c.overrides)
    .outerjoin(thread_assistants, thread_assistants.c.thread_id == threads.c.id)
    .where(threads.c.id == bindparam("id"))
    .order_by(thread_assistants.c.seq)
)
ATTACHED_TO_THREADS = (
    select(thread_assistants.c.thread_id, thread_assistants.c.assistant_id, thread_assistants.c.overrides)
    .where(thread_assistants.c.thread_id.in_(bindparam("ids", expanding=True)))
    .order_by(thread_assistants.c.seq)
)
ASSISTANTS_OF_THREAD = (
    select(assistants, thread_assistants.c.overrides)
    .join(thread_assistants, thread_assistants.c.assistant_id == assistants.c.id)
    .where(thread_assistants.c.thread_id == bindparam("thread_id"))
    .order_by(thread_assistants.c.seq)
)


class Threads(Queries):
    def create(self, messages: Iterable[Mapping] = (), metadata=None, title=None, tool_resources=None, assistants: Iterable[Mapping] = ()) -> dict:
        """A new thread with `messages` created in order and `assistants` ({assistant_id, overrides...}) attached."""
        thread = {
            "id": records.new_id("thread_"),
            "created_at": records.now(),
            "title": title,
            "metadata": records.check_metadata(metadata),
            "tool_resources": tool_resources,
        }
        new_messages = [message_row(thread["id"], m) for m in messages]
        links = _links(thread["id"], assistants)
        with self._writing() as connection:
            connection.execute(insert(threads), thread)
            _link(connection, links)
            insert_messages(connection, new_messages)
        return records.thread_object(thread, [records.thread_assistant(link["assistant_id"], link["overrides"]) for link in links])

    def get(self, thread_id: str) -> dict:
        return _thread_object(thread_id, db.read_one_statement(self.engine, THREAD_WITH_ATTACHED, {"id": thread_id}))

    def list(self, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            rows, has_more = fetch(connection, threads, page)
            attached = _attached(connection, [row["id"] for row in rows])
        return records.list_object([records.thread_object(row, attached.get(row["id"], [])) for row in rows], has_more)

    def modify(self, thread_id: str, metadata=None, title=None, messages: Iterable[Mapping] = (), tool_resources=None, assistants: Iterable[Mapping] | None = None) -> dict:
        """Replace the fields given (metadata whole, the attached assistants as a list) and append `messages`."""
        changes = {"metadata": records.check_metadata(metadata)} if metadata is not None else {}
        changes |= {k: v for k, v in {"title": title, "tool_resources": tool_resources}.items() if v is not None}
        new_messages = [message_row(thread_id, m) for m in messages]
        links = None if assistants is None else _links(thread_id, assistants)
        with self._writing() as connection:
            require(connection, threads, thread_id, "thread")
            if changes:
                connection.execute(update(threads).where(threads.c.id == thread_id).values(changes))
            if links is not None:
                connection.execute(delete(thread_assistants).where(thread_assistants.c.thread_id == thread_id))
                _link(connection, links)
            insert_messages(connection, new_messages)
            return _thread(connection, thread_id)

    def delete(self, thread_id: str) -> dict:
        """Delete the thread; its messages and assistant attachments go with it (ON DELETE CASCADE)."""
        with self._writing() as connection:
            if connection.execute(delete(threads).where(threads.c.id == thread_id)).rowcount == 0:
                raise NotFoundError("thread", thread_id)
        return records.deleted_object(thread_id, "thread")

    def with_messages(self, thread_id: str) -> dict:
        """The thread and all its messages, oldest first."""
        with db.reading(self.engine) as connection:
            thread = _thread(connection, thread_id)
            rows = connection.execute(THREAD_MESSAGES, {"thread_id": thread_id}).mappings()
            return {**thread, "messages": [records.message_object(row) for row in rows]}

    def attach(self, thread_id: str, assistant_id: str, overrides: Mapping | None = None) -> dict:
        """Attach the assistant to the thread, or replace the overrides of one already attached."""
        overrides = records.check_overrides(overrides)
        with self._writing() as connection:
            require(connection, threads, thread_id, "thread")
            require(connection, assistants, assistant_id, "assistant")
            _upsert(connection, [{"thread_id": thread_id, "assistant_id": assistant_id, "created_at": records.now(), "overrides": overrides}])
            return _thread(connection, thread_id)

    def assistants(self, thread_id: str) -> dict:
        """The assistants attached to the thread, in the order attached, each with the thread's overrides applied."""
        with db.reading(self.engine) as connection:
            require(connection, threads, thread_id, "thread")
            rows = connection.execute(ASSISTANTS_OF_THREAD, {"thread_id": thread_id}).mappings().all()
        return records.list_object([records.assistant_object(row, row["overrides"]) for row in rows], has_more=False)


def _thread(connection: Connection, thread_id: str) -> dict:
    """The thread and its attached assistants, in one query."""
    return _thread_object(thread_id, connection.execute(THREAD_WITH_ATTACHED, {"id": thread_id}).mappings().all())


def _thread_object(thread_id: str, rows: list[Mapping]) -> dict:
    """The thread from THREAD_WITH_ATTACHED's rows: one per attached assistant, or one with none."""
    if not rows:
        raise NotFoundError("thread", thread_id)
    attached = [records.thread_assistant(row["assistant_id"], row["overrides"]) for row in rows if row["assistant_id"]]
    return records.thread_object(rows[0], attached)


def _attached(connection: Connection, thread_ids: list[str]) -> dict[str, list[dict]]:
    """The assistants attached to each thread, in the order attached, as the thread shows them."""
    if not thread_ids:
        return {}
    attached: dict[str, list[dict]] = {}
    for thread_id, assistant_id, overrides in connection.execute(ATTACHED_TO_THREADS, {"ids": thread_ids}):
        attached.setdefault(thread_id, []).append(records.thread_assistant(assistant_id, overrides))
    return attached


def _links(thread_id: str, attachments: Iterable[Mapping]) -> list[dict]:
    """thread_assistants rows from [{assistant_id, overrides...}], the last of a repeated assistant winning."""
    created_at = records.now()
    links = {}
    for attachment in attachments:
        fields = dict(attachment)
        assistant_id = fields.pop("assistant_id")
        links[assistant_id] = {"thread_id": thread_id, "assistant_id": assistant_id, "created_at": created_at, "overrides": records.check_overrides(fields)}
    return list(links.values())


def _link(connection: Connection, links: list[dict]) -> None:
    """Insert the links, after checking that every assistant they name exists. One that does not is a 409: the
    body conflicts with what exists. A 404 would say the thread the URL names is missing, and a 400 that the body
    breaks the spec, which it does not."""
    if not links:
        return
    wanted = {link["assistant_id"] for link in links}
    found = set(connection.execute(select(assistants.c.id).where(assistants.c.id.in_(wanted))).scalars())
    missing = sorted(wanted - found)
    if missing:
        raise ConflictError(f"No assistant found with id '{missing[0]}'.", param="assistants", code="assistant_not_found")
    _upsert(connection, links)


def _upsert(connection: Connection, links: list[dict]) -> None:
    """Insert the links; a pair already linked keeps its place in the order and takes the new overrides. One
    statement, so that two replicas linking the same pair at once both succeed (an update, then an insert when
    it found nothing, lets both insert: the second violates uq_thread_assistants_pair)."""
    statement = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[connection.dialect.name](thread_assistants)
    connection.execute(statement.on_conflict_do_update(index_elements=["thread_id", "assistant_id"], set_={"overrides": statement.excluded.overrides}), links)
