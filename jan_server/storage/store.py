"""Threads, messages and assistants in the database, returned as OpenAI/Jan-shaped dicts.

Each public method is one transaction. Unknown ids raise NotFoundError; rule violations InvalidRequestError.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, bindparam, delete, insert, select, update

from jan_server.storage import db, records
from jan_server.errors import NotFoundError
from jan_server.storage.paging import Page, fetch, fetch_first
from jan_server.storage.tables import assistants, thread_assistants, threads
from jan_server.storage.tables import messages as messages_table  # `messages` also names the thread methods' parameter

#: Assistant fields stored as given (model/models and metadata go through records first).
ASSISTANT_FIELDS = ("name", "description", "instructions", "avatar", "tools", "tool_resources", "temperature", "top_p", "response_format")

# Hot reads are built once and run with bound values: building a SELECT costs more than running it.
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
MESSAGE_IN_THREAD = select(messages_table).where(messages_table.c.id == bindparam("id"), messages_table.c.thread_id == bindparam("thread_id"))
THREAD_MESSAGES = select(messages_table).where(messages_table.c.thread_id == bindparam("thread_id")).order_by(messages_table.c.created_at, messages_table.c.seq)


@functools.cache
def by_id(table: Table) -> Select:
    return select(table).where(table.c.id == bindparam("id"))


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._write_lock = threading.Lock()

    @classmethod
    def open(cls, url: str) -> "Store":
        """Connect to `url` and apply any pending migrations."""
        engine = db.create(url)
        db.migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # Threads

    def create_thread(self, messages: Iterable[Mapping] = (), metadata=None, title=None, tool_resources=None, assistants: Iterable[Mapping] = ()) -> dict:
        """A new thread with `messages` created in order and `assistants` ({assistant_id, overrides...}) attached."""
        thread = {
            "id": records.new_id("thread_"),
            "created_at": records.now(),
            "title": title,
            "metadata": records.check_metadata(metadata),
            "tool_resources": tool_resources,
        }
        new_messages = [self._message_row(thread["id"], m) for m in messages]
        links = self._links(thread["id"], assistants)
        with self._writing() as connection:
            connection.execute(insert(threads), thread)
            self._link(connection, links)
            if new_messages:
                connection.execute(insert(messages_table), new_messages)
        return records.thread_object(thread, [records.thread_assistant(link["assistant_id"], link["overrides"]) for link in links])

    def get_thread(self, thread_id: str) -> dict:
        return self._thread_object(thread_id, db.read_one_statement(self.engine, THREAD_WITH_ATTACHED, {"id": thread_id}))

    def list_threads(self, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            rows, has_more = fetch(connection, threads, page)
            attached = self._attached(connection, [row["id"] for row in rows])
        return records.list_object([records.thread_object(row, attached.get(row["id"], [])) for row in rows], has_more)

    def modify_thread(self, thread_id: str, metadata=None, title=None, messages: Iterable[Mapping] = (), tool_resources=None, assistants: Iterable[Mapping] | None = None) -> dict:
        """Replace the fields given (metadata whole, the attached assistants as a list) and append `messages`."""
        changes = {"metadata": records.check_metadata(metadata)} if metadata is not None else {}
        changes |= {k: v for k, v in {"title": title, "tool_resources": tool_resources}.items() if v is not None}
        new_messages = [self._message_row(thread_id, m) for m in messages]
        links = None if assistants is None else self._links(thread_id, assistants)
        with self._writing() as connection:
            self._require(connection, threads, thread_id, "thread")
            if changes:
                connection.execute(update(threads).where(threads.c.id == thread_id).values(changes))
            if links is not None:
                connection.execute(delete(thread_assistants).where(thread_assistants.c.thread_id == thread_id))
                self._link(connection, links)
            if new_messages:
                connection.execute(insert(messages_table), new_messages)
            return self._thread(connection, thread_id)

    def delete_thread(self, thread_id: str) -> dict:
        """Delete the thread; its messages and assistant attachments go with it (ON DELETE CASCADE)."""
        with self._writing() as connection:
            if connection.execute(delete(threads).where(threads.c.id == thread_id)).rowcount == 0:
                raise NotFoundError("thread", thread_id)
        return records.deleted_object(thread_id, "thread")

    def thread_with_messages(self, thread_id: str) -> dict:
        """The thread and all its messages, oldest first."""
        with db.reading(self.engine) as connection:
            thread = self._thread(connection, thread_id)
            rows = connection.execute(THREAD_MESSAGES, {"thread_id": thread_id}).mappings()
            return {**thread, "messages": [records.message_object(row) for row in rows]}

    def attach_assistant(self, thread_id: str, assistant_id: str, overrides: Mapping | None = None) -> dict:
        """Attach the assistant to the thread, or replace the overrides of one already attached."""
        overrides = records.check_overrides(overrides)
        with self._writing() as connection:
            self._require(connection, threads, thread_id, "thread")
            self._require(connection, assistants, assistant_id, "assistant")
            pair = (thread_assistants.c.thread_id == thread_id) & (thread_assistants.c.assistant_id == assistant_id)
            if connection.execute(update(thread_assistants).where(pair).values(overrides=overrides)).rowcount == 0:
                link = {"thread_id": thread_id, "assistant_id": assistant_id, "created_at": records.now(), "overrides": overrides}
                connection.execute(insert(thread_assistants), link)
            return self._thread(connection, thread_id)

    def thread_assistants(self, thread_id: str) -> dict:
        """The assistants attached to the thread, in the order attached, each with the thread's overrides applied."""
        with db.reading(self.engine) as connection:
            self._require(connection, threads, thread_id, "thread")
            rows = connection.execute(ASSISTANTS_OF_THREAD, {"thread_id": thread_id}).mappings().all()
        return records.list_object([records.assistant_object(row, row["overrides"]) for row in rows], has_more=False)

    # Messages

    def create_message(self, thread_id: str, message: Mapping) -> dict:
        row = self._message_row(thread_id, message)
        with self._writing() as connection:
            self._require(connection, threads, thread_id, "thread")
            connection.execute(insert(messages_table), row)
        return records.message_object(row)

    def get_message(self, thread_id: str, message_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return records.message_object(self._message(connection, thread_id, message_id))

    def modify_message(self, thread_id: str, message_id: str, metadata=None) -> dict:
        """Replace the message's metadata, the one field OpenAI lets a client change."""
        with self._writing() as connection:
            self._message(connection, thread_id, message_id)
            if metadata is not None:
                changes = {"metadata": records.check_metadata(metadata)}
                connection.execute(update(messages_table).where(messages_table.c.id == message_id).values(changes))
            return records.message_object(self._message(connection, thread_id, message_id))

    def delete_message(self, thread_id: str, message_id: str) -> dict:
        with self._writing() as connection:
            self._message(connection, thread_id, message_id)
            connection.execute(delete(messages_table).where(messages_table.c.id == message_id))
        return records.deleted_object(message_id, "thread.message")

    def list_messages(self, thread_id: str, page: Page) -> dict:
        if page.after or page.before:
            with db.reading(self.engine) as connection:
                self._require(connection, threads, thread_id, "thread")  # a missing thread is a 404, not an unknown cursor
                rows, has_more = fetch(connection, messages_table, page, "thread_id", thread_id)
        else:
            rows, has_more = fetch_first(self.engine, messages_table, page, "thread_id", thread_id)
            if not rows and not db.read_one_statement(self.engine, by_id(threads), {"id": thread_id}):
                raise NotFoundError("thread", thread_id)  # only an empty page needs to tell an empty thread from a missing one
        return records.list_object([records.message_object(row) for row in rows], has_more)

    def list_message_files(self, thread_id: str, message_id: str) -> dict:
        with db.reading(self.engine) as connection:
            message = self._message(connection, thread_id, message_id)
        files = [records.message_file_object(file_id, message) for file_id in records.attached_file_ids(message)]
        return records.list_object(files, has_more=False)

    def get_message_file(self, thread_id: str, message_id: str, file_id: str) -> dict:
        with db.reading(self.engine) as connection:
            message = self._message(connection, thread_id, message_id)
        if file_id not in records.attached_file_ids(message):
            raise NotFoundError("file", file_id)
        return records.message_file_object(file_id, message)

    # Assistants

    def create_assistant(self, fields: Mapping[str, Any]) -> dict:
        model, models = records.assistant_models(fields.get("model"), fields.get("models"))
        row = {
            "id": records.new_id("asst_"),
            "created_at": records.now(),
            **{name: fields.get(name) for name in ASSISTANT_FIELDS},
            "tools": fields.get("tools") or [],
            "model": model,
            "models": models,
            "metadata": records.check_metadata(fields.get("metadata")),
        }
        with self._writing() as connection:
            connection.execute(insert(assistants), row)
        return records.assistant_object(row)

    def get_assistant(self, assistant_id: str) -> dict:
        rows = db.read_one_statement(self.engine, by_id(assistants), {"id": assistant_id})
        if not rows:
            raise NotFoundError("assistant", assistant_id)
        return records.assistant_object(rows[0])

    def list_assistants(self, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            rows, has_more = fetch(connection, assistants, page)
        return records.list_object([records.assistant_object(row) for row in rows], has_more)

    def modify_assistant(self, assistant_id: str, fields: Mapping[str, Any]) -> dict:
        """Change the fields present in `fields`; a new `model` or `models` replaces both."""
        changes = {name: fields[name] for name in ASSISTANT_FIELDS if name in fields}
        if "metadata" in fields:
            changes["metadata"] = records.check_metadata(fields["metadata"])
        if fields.get("model") or fields.get("models"):
            changes["model"], changes["models"] = records.assistant_models(fields.get("model"), fields.get("models"))
        with self._writing() as connection:
            if changes:  # an unknown id updates nothing, and the read below raises the 404
                connection.execute(update(assistants).where(assistants.c.id == assistant_id).values(changes))
            return records.assistant_object(self._require(connection, assistants, assistant_id, "assistant"))

    def delete_assistant(self, assistant_id: str) -> dict:
        """Delete the assistant; threads it was attached to lose it (ON DELETE CASCADE)."""
        with self._writing() as connection:
            if connection.execute(delete(assistants).where(assistants.c.id == assistant_id)).rowcount == 0:
                raise NotFoundError("assistant", assistant_id)
        return records.deleted_object(assistant_id, "assistant")

    # Helpers

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction. SQLite runs one writer at a time: queueing this process's writers on a lock
        hands the turn over at once, where SQLite's busy handler would poll with sleeps of up to 100 ms."""
        with self._write_lock, db.writing(self.engine) as connection:
            yield connection

    @staticmethod
    def _require(connection: Connection, table, object_id: str, kind: str):
        row = connection.execute(by_id(table), {"id": object_id}).mappings().first()
        if row is None:
            raise NotFoundError(kind, object_id)
        return row

    @staticmethod
    def _thread(connection: Connection, thread_id: str) -> dict:
        """The thread and its attached assistants, in one query."""
        return Store._thread_object(thread_id, connection.execute(THREAD_WITH_ATTACHED, {"id": thread_id}).mappings().all())

    @staticmethod
    def _thread_object(thread_id: str, rows: list[Mapping]) -> dict:
        """The thread from THREAD_WITH_ATTACHED's rows: one per attached assistant, or one with none."""
        if not rows:
            raise NotFoundError("thread", thread_id)
        attached = [records.thread_assistant(row["assistant_id"], row["overrides"]) for row in rows if row["assistant_id"]]
        return records.thread_object(rows[0], attached)

    @staticmethod
    def _attached(connection: Connection, thread_ids: list[str]) -> dict[str, list[dict]]:
        """The assistants attached to each thread, in the order attached, as the thread shows them."""
        if not thread_ids:
            return {}
        attached: dict[str, list[dict]] = {}
        for thread_id, assistant_id, overrides in connection.execute(ATTACHED_TO_THREADS, {"ids": thread_ids}):
            attached.setdefault(thread_id, []).append(records.thread_assistant(assistant_id, overrides))
        return attached

    @staticmethod
    def _links(thread_id: str, assistants: Iterable[Mapping]) -> list[dict]:
        """thread_assistants rows from [{assistant_id, overrides...}], the last of a repeated assistant winning."""
        created_at = records.now()
        links = {}
        for attachment in assistants:
            fields = dict(attachment)
            assistant_id = fields.pop("assistant_id")
            links[assistant_id] = {"thread_id": thread_id, "assistant_id": assistant_id, "created_at": created_at, "overrides": records.check_overrides(fields)}
        return list(links.values())

    @staticmethod
    def _link(connection: Connection, links: list[dict]) -> None:
        if not links:
            return
        wanted = {link["assistant_id"] for link in links}
        found = set(connection.execute(select(assistants.c.id).where(assistants.c.id.in_(wanted))).scalars())
        missing = sorted(wanted - found)
        if missing:
            raise NotFoundError("assistant", missing[0], param="assistants")
        connection.execute(insert(thread_assistants), links)

    @staticmethod
    def _message(connection: Connection, thread_id: str, message_id: str):
        row = connection.execute(MESSAGE_IN_THREAD, {"id": message_id, "thread_id": thread_id}).mappings().first()
        if row is None:
            Store._require(connection, threads, thread_id, "thread")
            raise NotFoundError("message", message_id)
        return row

    @staticmethod
    def _message_row(thread_id: str, message: Mapping) -> dict:
        """A messages row from a create-message body ({role, content, file_ids, attachments, metadata})."""
        return {
            "id": records.new_id("msg_"),
            "thread_id": thread_id,
            "created_at": records.now(),
            "role": records.message_role(message.get("role")),
            "content": records.message_content(message.get("content")),
            "file_ids": records.message_file_ids(message.get("file_ids")),
            "attachments": message.get("attachments"),
            "metadata": records.check_metadata(message.get("metadata")),
            "assistant_id": message.get("assistant_id"),
            "run_id": None,
        }

