"""Vector stores: their rows, and the objects built with their files' counts (see vector_store_files for the files)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from jan_server.errors import InvalidRequestError
from jan_server.storage import db, records
from jan_server.storage.files import require_files
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, require
from jan_server.storage.tables import (
    vector_store_chunks,
    vector_store_files,
    vector_stores,
)

DAY = 86_400
STATUSES = ("in_progress", "completed", "failed", "cancelled")
#: What OpenAI's `auto` strategy is: 800-token chunks overlapping by 400.
AUTO = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}

COUNTS = (select(vector_store_files.c.status, func.count(), func.coalesce(func.sum(vector_store_files.c.usage_bytes), 0))
          .where(vector_store_files.c.vector_store_id == bindparam("vector_store_id")).group_by(vector_store_files.c.status))


def chunking(strategy: Mapping | None) -> dict:
    """The file's chunking strategy as OpenAI reports it (`auto` is static 800/400); 400 for an overlap over half."""
    if not strategy or strategy.get("type") == "auto":
        return {"type": "static", "static": dict(AUTO)}
    static = strategy["static"]
    if static["chunk_overlap_tokens"] < 0 or static["chunk_overlap_tokens"] > static["max_chunk_size_tokens"] // 2:
        raise InvalidRequestError("chunk_overlap_tokens must be between 0 and half of max_chunk_size_tokens.",
                                  param="chunking_strategy")
    return {"type": "static", "static": dict(static)}


def file_counts(rows) -> tuple[dict, int]:
    """OpenAI's file_counts and the usage in bytes, from (status, count, usage) rows."""
    counts = dict.fromkeys(STATUSES, 0)
    usage = 0
    for status, count, used in rows:
        counts[status] += count
        usage += int(used)
    return {**counts, "total": sum(counts.values())}, usage


def expires_at(row: Mapping) -> int | None:
    after = row["expires_after"]
    return row["last_active_at"] + after["days"] * DAY if after else None


def store_object(row: Mapping, counts: dict, usage: int) -> dict:
    expiry = expires_at(row)
    if expiry is not None and records.now() >= expiry:
        status = "expired"
    else:
        status = "in_progress" if counts["in_progress"] else "completed"
    store = {
        "id": row["id"], "object": "vector_store", "created_at": row["created_at"], "name": row["name"],
        "description": row["description"], "usage_bytes": usage, "file_counts": counts, "status": status,
        "expires_at": expiry, "last_active_at": row["last_active_at"], "metadata": row["metadata"],
        "embedding_model": row["embedding_model"],
    }
    return store | ({"expires_after": row["expires_after"]} if row["expires_after"] else {})


def described(connection: Connection, row: Mapping) -> dict:
    return store_object(row, *file_counts(connection.execute(COUNTS, {"vector_store_id": row["id"]}).all()))


def add_files(connection: Connection, store_id: str, entries: list[tuple[str, dict | None, dict]], batch_id: str | None = None) -> None:
    """Put files into the store, `in_progress` (the ingestion worker takes them from there): (file id, attributes,
    chunking strategy) each. A file already there is taken again, with its new attributes and strategy."""
    require_files(connection, [file_id for file_id, _, _ in entries])
    for file_id, attributes, strategy in entries:
        connection.execute(delete(vector_store_chunks).where(vector_store_chunks.c.vector_store_id == store_id,
                                                             vector_store_chunks.c.file_id == file_id))
        connection.execute(delete(vector_store_files).where(vector_store_files.c.vector_store_id == store_id,
                                                            vector_store_files.c.id == file_id))
        connection.execute(insert(vector_store_files), {
            "id": file_id, "vector_store_id": store_id, "batch_id": batch_id, "created_at": records.now(),
            "status": "in_progress", "last_error": None, "chunking_strategy": strategy, "attributes": attributes,
            "usage_bytes": 0,
        })


class VectorStores(Queries):
    def create(self, body: Mapping, embedding_model: str) -> dict:
        now = records.now()
        row = {
            "id": records.new_id("vs_"), "created_at": now, "name": body.get("name") or "",
            "description": body.get("description"), "metadata": records.check_metadata(body.get("metadata")),
            "expires_after": body.get("expires_after"), "last_active_at": now, "embedding_model": embedding_model,
        }
        strategy = chunking(body.get("chunking_strategy"))
        with self._writing() as connection:
            connection.execute(insert(vector_stores), row)
            add_files(connection, row["id"], [(file_id, None, strategy) for file_id in dict.fromkeys(body.get("file_ids") or [])])
            return described(connection, row)

    def get(self, store_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return described(connection, require(connection, vector_stores, store_id, "vector_store"))

    def list(self, page: Page) -> dict:
        with db.reading(self.engine) as connection:
            rows, has_more = fetch(connection, vector_stores, page)
            return records.list_object([described(connection, row) for row in rows], has_more)

    def modify(self, store_id: str, body: Mapping) -> dict:
        changes = {key: body[key] for key in ("name", "expires_after") if key in body}
        if changes.get("name") is None and "name" in changes:
            del changes["name"]
        if "metadata" in body and body["metadata"] is not None:
            changes["metadata"] = records.check_metadata(body["metadata"])
        with self._writing() as connection:
            require(connection, vector_stores, store_id, "vector_store")
            if changes:
                connection.execute(update(vector_stores).where(vector_stores.c.id == store_id).values(**changes))
            return described(connection, require(connection, vector_stores, store_id, "vector_store"))

    def delete(self, store_id: str) -> dict:
        with self._writing() as connection:
            require(connection, vector_stores, store_id, "vector_store")
            connection.execute(delete(vector_store_chunks).where(vector_store_chunks.c.vector_store_id == store_id))
            connection.execute(delete(vector_store_files).where(vector_store_files.c.vector_store_id == store_id))
            connection.execute(delete(vector_stores).where(vector_stores.c.id == store_id))
        return records.deleted_object(store_id, "vector_store")

    def touch(self, store_id: str) -> Mapping:
        """The store's row, its last activity now (a search): an expiry counts from it."""
        with self._writing() as connection:
            row = require(connection, vector_stores, store_id, "vector_store")
            connection.execute(update(vector_stores).where(vector_stores.c.id == store_id).values(last_active_at=records.now()))
            return row
