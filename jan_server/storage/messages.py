"""Messages in a thread, returned as OpenAI-shaped dicts."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.files import existing, require_files
from jan_server.storage.paging import Page, fetch, fetch_first
from jan_server.storage.queries import Queries, by_id, require, require_child
from jan_server.storage.tables import messages, threads

# Hot reads are built once and run with bound values.
MESSAGE_IN_THREAD = select(messages).where(messages.c.id == bindparam("id"), messages.c.thread_id == bindparam("thread_id"))
THREAD_MESSAGES = select(messages).where(messages.c.thread_id == bindparam("thread_id")).order_by(messages.c.created_at, messages.c.seq)


def message_row(thread_id: str, message: Mapping) -> dict:
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


def insert_messages(connection: Connection, rows: list[dict]) -> None:
    """Insert message rows whose attached files all exist (NotFoundError for the first that does not)."""
    require_files(connection, [file_id for row in rows for file_id in records.attached_file_ids(row)])
    if rows:
        connection.execute(insert(messages), rows)


def message_in_thread(connection: Connection, thread_id: str, message_id: str):
    """The message's row; NotFoundError names the thread if that is what is missing."""
    return require_child(connection, MESSAGE_IN_THREAD, {"id": message_id, "thread_id": thread_id}, threads, thread_id, "thread", "message")


class Messages(Queries):
    def create(self, thread_id: str, message: Mapping) -> dict:
        row = message_row(thread_id, message)
        with self._writing() as connection:
            require(connection, threads, thread_id, "thread")
            insert_messages(connection, [row])
        return records.message_object(row)

    def get(self, thread_id: str, message_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return records.message_object(message_in_thread(connection, thread_id, message_id))

    def modify(self, thread_id: str, message_id: str, metadata=None) -> dict:
        """Replace the message's metadata, the one field OpenAI lets a client change."""
        with self._writing() as connection:
            message_in_thread(connection, thread_id, message_id)
            if metadata is not None:
                changes = {"metadata": records.check_metadata(metadata)}
                connection.execute(update(messages).where(messages.c.id == message_id).values(changes))
            return records.message_object(message_in_thread(connection, thread_id, message_id))

    def delete(self, thread_id: str, message_id: str) -> dict:
        with self._writing() as connection:
            message_in_thread(connection, thread_id, message_id)
            connection.execute(delete(messages).where(messages.c.id == message_id))
        return records.deleted_object(message_id, "thread.message")

    def list(self, thread_id: str, page: Page) -> dict:
        if page.after or page.before:
            with db.reading(self.engine) as connection:
                require(connection, threads, thread_id, "thread")  # a missing thread is a 404, not an unknown cursor
                rows, has_more = fetch(connection, messages, page, "thread_id", thread_id)
        else:
            rows, has_more = fetch_first(self.engine, messages, page, "thread_id", thread_id)
            if not rows and not db.read_one_statement(self.engine, by_id(threads), {"id": thread_id}):
                raise NotFoundError("thread", thread_id)  # only an empty page needs to tell an empty thread from a missing one
        return records.list_object([records.message_object(row) for row in rows], has_more)

    def files(self, thread_id: str, message_id: str) -> dict:
        """The message's files that are still stored (a deleted file leaves its messages)."""
        with db.reading(self.engine) as connection:
            message = message_in_thread(connection, thread_id, message_id)
            stored = existing(connection, records.attached_file_ids(message))
        return records.list_object([records.message_file_object(file_id, message) for file_id in stored], has_more=False)

    def file(self, thread_id: str, message_id: str, file_id: str) -> dict:
        with db.reading(self.engine) as connection:
            message = message_in_thread(connection, thread_id, message_id)
            if file_id not in records.attached_file_ids(message) or not existing(connection, [file_id]):
                raise NotFoundError("file", file_id)
        return records.message_file_object(file_id, message)
