"""Stored responses: the Response object, its input items, and the chain of earlier responses that is a new
response's context. A response that continues a conversation appends its input and output to it in the same
transaction that stores it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, delete, insert, select, update

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.conversations import insert_items
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, by_id, require
from jan_server.storage.tables import conversations, response_items, responses

#: Statuses of a background response whose generation has not ended.
UNFINISHED = ("queued", "in_progress")

RESPONSE_ITEMS = (
    select(response_items.c.item)
    .where(response_items.c.response_id == bindparam("response_id"))
    .order_by(response_items.c.created_at, response_items.c.seq)
)


class Responses(Queries):
    def save(self, response: Mapping, input_items: Iterable[Mapping] = (), conversation_items: Iterable[Mapping] = ()) -> None:
        """Store a new response (or the new state of one stored before, whose input items are kept), and append
        `conversation_items` to its conversation."""
        row = {
            "id": response["id"],
            "created_at": response["created_at"],
            "status": response["status"],
            "background": bool(response.get("background")),
            "previous_response_id": response.get("previous_response_id"),
            "object": dict(response),
        }
        with self._writing() as connection:
            changed = connection.execute(
                update(responses).where(responses.c.id == row["id"]).values(status=row["status"], object=row["object"])
            ).rowcount
            if not changed:
                connection.execute(insert(responses), row)
                item_rows = [{"id": item["id"], "response_id": row["id"], "created_at": row["created_at"], "item": dict(item)} for item in input_items]
                if item_rows:
                    connection.execute(insert(response_items), item_rows)
            conversation = response.get("conversation")
            if conversation:
                require(connection, conversations, conversation["id"], "conversation")  # deleted meanwhile: nothing lost silently
                insert_items(connection, conversation["id"], conversation_items)

    def get(self, response_id: str) -> dict:
        rows = db.read_one_statement(self.engine, by_id(responses), {"id": response_id})
        if not rows:
            raise NotFoundError("response", response_id)
        return rows[0]["object"]

    def delete(self, response_id: str) -> dict:
        with self._writing() as connection:
            if connection.execute(delete(responses).where(responses.c.id == response_id)).rowcount == 0:
                raise NotFoundError("response", response_id)
        return records.deleted_object(response_id, "response")

    def input_items(self, response_id: str, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            require(connection, responses, response_id, "response")
            rows, has_more = fetch(connection, response_items, page, "response_id", response_id)
        return records.list_object([row["item"] for row in rows], has_more)

    def chain(self, previous_response_id: str) -> list[dict]:
        """The context a response continuing `previous_response_id` has: each earlier response's input items and
        output, oldest first. The chain ends early at a response that was deleted; the one named must exist."""
        context: list[list[dict]] = []
        with db.reading(self.engine) as connection:
            response_id = previous_response_id
            while response_id:
                row = connection.execute(by_id(responses), {"id": response_id}).mappings().first()
                if row is None:
                    if response_id == previous_response_id:
                        raise NotFoundError("response", response_id, param="previous_response_id")
                    break
                inputs = list(connection.execute(RESPONSE_ITEMS, {"response_id": response_id}).scalars())
                context.append(inputs + list(row["object"]["output"]))
                response_id = row["previous_response_id"]
        return [item for turn in reversed(context) for item in turn]

    def fail_unfinished(self, error: Mapping) -> int:
        """Mark background responses left queued or in progress (by a server that stopped) as failed with `error`."""
        with self._writing() as connection:
            rows = connection.execute(select(responses.c.id, responses.c.object).where(responses.c.status.in_(UNFINISHED))).all()
            for response_id, response in rows:
                failed = {**response, "status": "failed", "error": dict(error)}
                connection.execute(update(responses).where(responses.c.id == response_id).values(status="failed", object=failed))
        return len(rows)
