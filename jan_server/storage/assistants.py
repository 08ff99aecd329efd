"""Assistants, returned as Jan-shaped dicts (OpenAI's assistant plus `models` and the extra fields)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, update

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, by_id, require
from jan_server.storage.tables import assistants

#: Assistant fields stored as given (model/models and metadata go through records first).
ASSISTANT_FIELDS = ("name", "description", "instructions", "avatar", "tools", "tool_resources", "temperature", "top_p", "response_format")


class Assistants(Queries):
    def create(self, fields: Mapping[str, Any]) -> dict:
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

    def get(self, assistant_id: str) -> dict:
        rows = db.read_one_statement(self.engine, by_id(assistants), {"id": assistant_id})
        if not rows:
            raise NotFoundError("assistant", assistant_id)
        return records.assistant_object(rows[0])

    def list(self, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            rows, has_more = fetch(connection, assistants, page)
        return records.list_object([records.assistant_object(row) for row in rows], has_more)

    def modify(self, assistant_id: str, fields: Mapping[str, Any]) -> dict:
        """Change the fields present in `fields`; a new `model` or `models` replaces both."""
        changes = {name: fields[name] for name in ASSISTANT_FIELDS if name in fields}
        if "metadata" in fields:
            changes["metadata"] = records.check_metadata(fields["metadata"])
        if fields.get("model") or fields.get("models"):
            changes["model"], changes["models"] = records.assistant_models(fields.get("model"), fields.get("models"))
        with self._writing() as connection:
            if changes:  # an unknown id updates nothing, and the read below raises the 404
                connection.execute(update(assistants).where(assistants.c.id == assistant_id).values(changes))
            return records.assistant_object(require(connection, assistants, assistant_id, "assistant"))

    def delete(self, assistant_id: str) -> dict:
        """Delete the assistant; threads it was attached to lose it (ON DELETE CASCADE)."""
        with self._writing() as connection:
            if connection.execute(delete(assistants).where(assistants.c.id == assistant_id)).rowcount == 0:
                raise NotFoundError("assistant", assistant_id)
        return records.deleted_object(assistant_id, "assistant")
