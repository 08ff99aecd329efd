"""Conversations and their items, returned as OpenAI-shaped dicts. Items arrive ready (ids given, content
normalised by jan_server.responses.items) and are stored as they are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, require, require_child
from jan_server.storage.tables import conversation_items, conversations

ITEM_IN_CONVERSATION = select(conversation_items).where(
    conversation_items.c.id == bindparam("id"), conversation_items.c.conversation_id == bindparam("conversation_id")
)
CONVERSATION_ITEMS = (
    select(conversation_items.c.item)
    .where(conversation_items.c.conversation_id == bindparam("conversation_id"))
    .order_by(conversation_items.c.created_at, conversation_items.c.seq)
)


def conversation_object(row: Mapping) -> dict:
    return {"id": row["id"], "object": "conversation", "created_at": row["created_at"], "metadata": row["metadata"]}


def insert_items(connection: Connection, conversation_id: str, items: Iterable[Mapping]) -> None:
    """Append items to a conversation, in order (also used by a response that continues the conversation)."""
    created_at = records.now()
    rows = [{"id": item["id"], "conversation_id": conversation_id, "created_at": created_at, "item": dict(item)} for item in items]
    if rows:
        connection.execute(insert(conversation_items), rows)


class Conversations(Queries):
    def create(self, metadata=None, items: Iterable[Mapping] = ()) -> dict:
        row = {"id": records.new_id("conv_"), "created_at": records.now(), "metadata": records.check_metadata(metadata)}
        with self._writing() as connection:
            connection.execute(insert(conversations), row)
            insert_items(connection, row["id"], items)
        return conversation_object(row)

    def get(self, conversation_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return conversation_object(require(connection, conversations, conversation_id, "conversation"))

    def modify(self, conversation_id: str, metadata) -> dict:
        """Replace the metadata, the one field a conversation has to change."""
        with self._writing() as connection:
            require(connection, conversations, conversation_id, "conversation")
            changes = {"metadata": records.check_metadata(metadata)}
            connection.execute(update(conversations).where(conversations.c.id == conversation_id).values(changes))
            return conversation_object(require(connection, conversations, conversation_id, "conversation"))

    def delete(self, conversation_id: str) -> dict:
        """Delete the conversation; its items go with it (ON DELETE CASCADE)."""
        with self._writing() as connection:
            if connection.execute(delete(conversations).where(conversations.c.id == conversation_id)).rowcount == 0:
                raise NotFoundError("conversation", conversation_id)
        return records.deleted_object(conversation_id, "conversation")

    def add_items(self, conversation_id: str, items: list[Mapping]) -> dict:
        with self._writing() as connection:
            require(connection, conversations, conversation_id, "conversation")
            insert_items(connection, conversation_id, items)
        return records.list_object([dict(item) for item in items], has_more=False)

    def list_items(self, conversation_id: str, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            require(connection, conversations, conversation_id, "conversation")
            rows, has_more = fetch(connection, conversation_items, page, "conversation_id", conversation_id)
        return records.list_object([row["item"] for row in rows], has_more)

    def get_item(self, conversation_id: str, item_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return _item(connection, conversation_id, item_id)["item"]

    def delete_item(self, conversation_id: str, item_id: str) -> dict:
        """Delete one item; OpenAI answers with the conversation it was in."""
        with self._writing() as connection:
            _item(connection, conversation_id, item_id)
            connection.execute(delete(conversation_items).where(conversation_items.c.id == item_id))
            return conversation_object(require(connection, conversations, conversation_id, "conversation"))

    def context(self, conversation_id: str) -> list[dict]:
        """Every item of the conversation, oldest first: the context of a response that continues it."""
        with db.reading(self.engine) as connection:
            require(connection, conversations, conversation_id, "conversation")
            return list(connection.execute(CONVERSATION_ITEMS, {"conversation_id": conversation_id}).scalars())


def _item(connection: Connection, conversation_id: str, item_id: str):
    params = {"id": item_id, "conversation_id": conversation_id}
    return require_child(connection, ITEM_IN_CONVERSATION, params, conversations, conversation_id, "conversation", "item")
