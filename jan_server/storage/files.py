"""Uploaded files: their rows, and their bytes in chunks of the same database (see tables.file_chunks)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import Connection, bindparam, delete, func, insert, select

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.paging import Page, fetch, fetch_first
from jan_server.storage.queries import Queries, by_id, require
from jan_server.storage.tables import (
    file_chunks,
    files,
    vector_store_chunks,
    vector_store_files,
)

#: Bytes per stored chunk: one chunk at a time is ever in memory, on the way in or out.
CHUNK_BYTES = 1024 * 1024
#: The purposes an upload may name; OpenAI's others (fine-tune, vision, evals) serve APIs this server has not.
PURPOSES = ("assistants", "batch", "user_data")

CHUNK = select(file_chunks.c.data).where(file_chunks.c.file_id == bindparam("file_id"), file_chunks.c.n == bindparam("n"))
EXISTING = select(files.c.id).where(files.c.id.in_(bindparam("ids", expanding=True)))


def file_object(row) -> dict:
    return {
        "id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
        "filename": row["filename"], "purpose": row["purpose"], "status": "processed",
    }


def existing(connection: Connection, file_ids: Iterable[str]) -> list[str]:
    """Those of `file_ids` that name a stored file, in their order."""
    wanted = list(dict.fromkeys(file_ids))
    found = set(connection.execute(EXISTING, {"ids": wanted}).scalars()) if wanted else set()
    return [file_id for file_id in wanted if file_id in found]


def require_files(connection: Connection, file_ids: Iterable[str]) -> None:
    """NotFoundError for the first of `file_ids` that names no stored file."""
    file_ids = list(file_ids)
    found = set(existing(connection, file_ids))
    missing = next((file_id for file_id in file_ids if file_id not in found), None)
    if missing is not None:
        raise NotFoundError("file", missing)


class Files(Queries):
    def create(self, staged: Path, filename: str, purpose: str) -> dict:
        """Store the file staged at `staged` (an upload the web layer wrote to disk), read a chunk at a time."""
        row = {"id": records.new_id("file-"), "created_at": records.now(), "filename": filename, "purpose": purpose,
               "bytes": staged.stat().st_size}
        with self._writing() as connection, staged.open("rb") as source:
            connection.execute(insert(files), row)
            n = 0
            while chunk := source.read(CHUNK_BYTES):
                connection.execute(insert(file_chunks), {"file_id": row["id"], "n": n, "data": chunk})
                n += 1
        return file_object(row)

    def get(self, file_id: str) -> dict:
        rows = db.read_one_statement(self.engine, by_id(files), {"id": file_id})
        if not rows:
            raise NotFoundError("file", file_id)
        return file_object(rows[0])

    def list(self, page: Page, purpose: str | None = None) -> dict:
        scope = "purpose" if purpose else None
        if page.after or page.before:
            with db.reading(self.engine) as connection:
                rows, has_more = fetch(connection, files, page, scope, purpose)
        else:
            rows, has_more = fetch_first(self.engine, files, page, scope, purpose)
        return records.list_object([file_object(row) for row in rows], has_more)

    def delete(self, file_id: str) -> dict:
        with self._writing() as connection:
            require(connection, files, file_id, "file")
            # Out of every vector store, its chunks with it (the foreign keys would cascade; the full-text index's
            # triggers are sure to see a plain delete).
            connection.execute(delete(vector_store_chunks).where(vector_store_chunks.c.file_id == file_id))
            connection.execute(delete(vector_store_files).where(vector_store_files.c.id == file_id))
            connection.execute(delete(file_chunks).where(file_chunks.c.file_id == file_id))
            connection.execute(delete(files).where(files.c.id == file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    def content(self, file_id: str) -> tuple[dict, Iterator[bytes]]:
        """The file and its bytes, read a chunk per statement as the iterator is consumed."""
        with db.reading(self.engine) as connection:
            row = require(connection, files, file_id, "file")
            count = connection.execute(select(func.count()).where(file_chunks.c.file_id == file_id)).scalar_one()
        return file_object(row), self._chunks(file_id, count)

    def _chunks(self, file_id: str, count: int) -> Iterator[bytes]:
        for n in range(count):
            rows = db.read_one_statement(self.engine, CHUNK, {"file_id": file_id, "n": n})
            if not rows:  # deleted meanwhile
                return
            yield rows[0]["data"]
