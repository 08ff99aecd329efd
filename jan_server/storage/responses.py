"""Stored responses: the Response object, its input items, and the chain of earlier responses that is a new
response's context. A response that continues a conversation appends its input and output to it in the same
transaction that stores it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

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
    """A response is inserted once (when it ends; a background one when it is queued) and then only updated while it
    is unfinished, by the process that runs it (its `owner`), which refreshes its `heartbeat` meanwhile."""

    def insert(self, response: Mapping, input_items: Iterable[Mapping] = (), conversation_items: Iterable[Mapping] = (),
               owner: str | None = None) -> None:
        """Store a new response with its input items (an unfinished one run by `owner`), and append
        `conversation_items` to its conversation."""
        row = {
            "id": response["id"],
            "created_at": response["created_at"],
            "status": response["status"],
            "background": bool(response.get("background")),
            "previous_response_id": response.get("previous_response_id"),
            "object": dict(response),
            "owner": owner,
            "heartbeat": time.time() if owner else None,
        }
        with self._writing() as connection:
            connection.execute(insert(responses), row)
            item_rows = [{"id": item["id"], "response_id": row["id"], "created_at": row["created_at"], "item": dict(item)} for item in input_items]
            if item_rows:
                connection.execute(insert(response_items), item_rows)
            _append(connection, response, conversation_items)

    def update(self, response: Mapping, owner: str, conversation_items: Iterable[Mapping] = ()) -> bool:
        """Store the new state of an unfinished response `owner` runs, and append `conversation_items` to its
        conversation; False (and nothing written) if there is no such row: it was deleted, or failed as orphaned."""
        with self._writing() as connection:
            changed = connection.execute(
                update(responses)
                .where(responses.c.id == response["id"], responses.c.owner == owner, responses.c.status.in_(UNFINISHED))
                .values(status=response["status"], object=dict(response), heartbeat=time.time())
            ).rowcount
            if changed:
                _append(connection, response, conversation_items)
        return bool(changed)

    def heartbeat(self, owner: str) -> dict[str, bool]:
        """Refresh the heartbeat of the unfinished responses `owner` runs: each one's id, and whether a cancel of it
        was requested."""
        mine = (responses.c.owner == owner) & responses.c.status.in_(UNFINISHED)
        with self._writing() as connection:
            connection.execute(update(responses).where(mine).values(heartbeat=time.time()))
            return dict(connection.execute(select(responses.c.id, responses.c.cancel_requested).where(mine)).all())

    def request_cancel(self, response_id: str) -> None:
        """Ask the owner of an unfinished response to cancel it (it reads this with its heartbeat)."""
        with self._writing() as connection:
            connection.execute(
                update(responses).where(responses.c.id == response_id, responses.c.status.in_(UNFINISHED)).values(cancel_requested=True)
            )

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

    def fail_orphaned(self, error: Mapping, stale_before: float, response_id: str | None = None) -> int:
        """Mark unfinished responses whose owner's heartbeat is older than `stale_before` (a server that stopped or
        crashed) as failed with `error`: all of them, or only `response_id`. How many were."""
        orphaned = responses.c.status.in_(UNFINISHED) & or_(responses.c.heartbeat.is_(None), responses.c.heartbeat < stale_before)
        if response_id is not None:
            orphaned &= responses.c.id == response_id
        failed = 0
        with self._writing() as connection:
            for found, response in connection.execute(select(responses.c.id, responses.c.object).where(orphaned)).all():
                # the condition again: an owner's write since the SELECT (PostgreSQL) proves it alive
                failed += connection.execute(
                    update(responses).where(responses.c.id == found, orphaned)
                    .values(status="failed", object={**response, "status": "failed", "error": dict(error)})
                ).rowcount
        return failed


def _append(connection: Connection, response: Mapping, conversation_items: Iterable[Mapping]) -> None:
    """Append `conversation_items` to the response's conversation, if it has one."""
    conversation, conversation_items = response.get("conversation"), list(conversation_items)
    if conversation and conversation_items:
        require(connection, conversations, conversation["id"], "conversation")  # deleted meanwhile: nothing lost silently
        insert_items(connection, conversation["id"], conversation_items)
