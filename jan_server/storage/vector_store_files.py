"""The files of vector stores, their batches, and what ingestion reads and writes (jan_server.retrieval.ingest)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from jan_server.errors import NotFoundError
from jan_server.storage import db, records
from jan_server.storage.paging import Page, fetch
from jan_server.storage.queries import Queries, require
from jan_server.storage.tables import (
    files,
    vector_store_chunks,
    vector_store_file_batches,
    vector_store_files,
    vector_stores,
)
from jan_server.storage.vector_stores import add_files, chunking, file_counts

ONE = select(vector_store_files).where(vector_store_files.c.vector_store_id == bindparam("vector_store_id"),
                                       vector_store_files.c.id == bindparam("id"))
BATCH = select(vector_store_file_batches).where(vector_store_file_batches.c.vector_store_id == bindparam("vector_store_id"),
                                                vector_store_file_batches.c.id == bindparam("id"))
BATCH_COUNTS = (select(vector_store_files.c.status, func.count(), func.sum(vector_store_files.c.usage_bytes))
                .where(vector_store_files.c.batch_id == bindparam("batch_id")).group_by(vector_store_files.c.status))
PENDING = (select(vector_store_files.c.seq, vector_store_files.c.id, vector_store_files.c.vector_store_id, vector_store_files.c.chunking_strategy,
                  vector_stores.c.embedding_model, files.c.filename)
           .join(vector_stores, vector_stores.c.id == vector_store_files.c.vector_store_id)
           .join(files, files.c.id == vector_store_files.c.id)
           .where(vector_store_files.c.status == "in_progress").order_by(vector_store_files.c.seq))


@dataclass(frozen=True)
class Pending:
    """A store's file waiting to be ingested (`seq`: its row, which a file added again replaces)."""
    seq: int
    vector_store_id: str
    file_id: str
    filename: str
    chunking: dict
    embedding_model: str


def file_object(row: Mapping) -> dict:
    return {
        "id": row["id"], "object": "vector_store.file", "usage_bytes": row["usage_bytes"], "created_at": row["created_at"],
        "vector_store_id": row["vector_store_id"], "status": row["status"], "last_error": row["last_error"],
        "chunking_strategy": row["chunking_strategy"], "attributes": row["attributes"],
    }


def batch_object(connection: Connection, row: Mapping) -> dict:
    counts, _ = file_counts(connection.execute(BATCH_COUNTS, {"batch_id": row["id"]}).all())
    if row["cancelled"]:
        status = "cancelled"
    elif counts["in_progress"]:
        status = "in_progress"
    else:
        status = "failed" if counts["failed"] and counts["failed"] == counts["total"] else "completed"
    return {"id": row["id"], "object": "vector_store.files_batch", "created_at": row["created_at"],
            "vector_store_id": row["vector_store_id"], "status": status, "file_counts": counts}


def require_file(connection: Connection, store_id: str, file_id: str) -> Mapping:
    return _in_store(connection, ONE, store_id, file_id, "file")


def require_batch(connection: Connection, store_id: str, batch_id: str) -> Mapping:
    return _in_store(connection, BATCH, store_id, batch_id, "batch")


def _in_store(connection: Connection, query, store_id: str, row_id: str, kind: str) -> Mapping:
    """The store's row that `query` finds; a 404 naming the store if it is missing, else naming the row."""
    row = connection.execute(query, {"vector_store_id": store_id, "id": row_id}).mappings().first()
    if row is None:
        require(connection, vector_stores, store_id, "vector_store")
        raise NotFoundError(kind, row_id)
    return row


def _list(connection: Connection, page: Page, status: str | None, **scope) -> dict:
    if status:
        scope["status"] = status
    rows, has_more = fetch(connection, vector_store_files, page, tuple(scope), tuple(scope.values()))
    return records.list_object([file_object(row) for row in rows], has_more)


class VectorStoreFiles(Queries):
    def add(self, store_id: str, body: Mapping) -> dict:
        with self._writing() as connection:
            require(connection, vector_stores, store_id, "vector_store")
            add_files(connection, store_id, [(body["file_id"], body.get("attributes"), chunking(body.get("chunking_strategy")))])
            return file_object(require_file(connection, store_id, body["file_id"]))

    def list(self, store_id: str, page: Page, status: str | None = None) -> dict:
        with db.reading(self.engine) as connection:
            require(connection, vector_stores, store_id, "vector_store")
            return _list(connection, page, status, vector_store_id=store_id)

    def get(self, store_id: str, file_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return file_object(require_file(connection, store_id, file_id))

    def update(self, store_id: str, file_id: str, attributes: dict | None) -> dict:
        with self._writing() as connection:
            require_file(connection, store_id, file_id)
            connection.execute(update(vector_store_files).where(vector_store_files.c.vector_store_id == store_id,
                                                                vector_store_files.c.id == file_id).values(attributes=attributes))
            return file_object(require_file(connection, store_id, file_id))

    def delete(self, store_id: str, file_id: str) -> dict:
        """The file leaves the store (its chunks with it); the file itself stays."""
        with self._writing() as connection:
            require_file(connection, store_id, file_id)
            where = (vector_store_chunks.c.vector_store_id == store_id, vector_store_chunks.c.file_id == file_id)
            connection.execute(delete(vector_store_chunks).where(*where))
            connection.execute(delete(vector_store_files).where(vector_store_files.c.vector_store_id == store_id,
                                                                vector_store_files.c.id == file_id))
        return records.deleted_object(file_id, "vector_store.file")

    def create_batch(self, store_id: str, body: Mapping) -> dict:
        strategy = chunking(body.get("chunking_strategy"))
        entries = [(file_id, body.get("attributes"), strategy) for file_id in body.get("file_ids") or []]
        entries += [(f["file_id"], f.get("attributes"), chunking(f.get("chunking_strategy"))) for f in body.get("files") or []]
        row = {"id": records.new_id("vsfb_"), "vector_store_id": store_id, "created_at": records.now(), "cancelled": False}
        with self._writing() as connection:
            require(connection, vector_stores, store_id, "vector_store")
            connection.execute(insert(vector_store_file_batches), row)
            add_files(connection, store_id, list({entry[0]: entry for entry in entries}.values()), batch_id=row["id"])
            return batch_object(connection, row)

    def get_batch(self, store_id: str, batch_id: str) -> dict:
        with db.reading(self.engine) as connection:
            return batch_object(connection, require_batch(connection, store_id, batch_id))

    def cancel_batch(self, store_id: str, batch_id: str) -> dict:
        """The batch's files not yet ingested are `cancelled`; those done stay."""
        with self._writing() as connection:
            require_batch(connection, store_id, batch_id)
            connection.execute(update(vector_store_file_batches).where(vector_store_file_batches.c.id == batch_id).values(cancelled=True))
            connection.execute(update(vector_store_files).where(vector_store_files.c.batch_id == batch_id,
                                                                vector_store_files.c.status == "in_progress").values(status="cancelled"))
            return batch_object(connection, require_batch(connection, store_id, batch_id))

    def list_batch(self, store_id: str, batch_id: str, page: Page, status: str | None = None) -> dict:
        with db.reading(self.engine) as connection:
            require_batch(connection, store_id, batch_id)
            return _list(connection, page, status, vector_store_id=store_id, batch_id=batch_id)

    # Ingestion (jan_server.retrieval.ingest).
    def pending(self) -> list[Pending]:
        rows = db.read_one_statement(self.engine, PENDING, {})
        return [Pending(row["seq"], row["vector_store_id"], row["id"], row["filename"], row["chunking_strategy"], row["embedding_model"]) for row in rows]

    def finish(self, job: Pending, chunks: list[tuple[str, bytes]]) -> bool:
        """Store the file's chunks (text, float32 vector) and mark it `completed`, unless it left the store, was
        cancelled or was added again meanwhile; whether it was stored."""
        with self._writing() as connection:
            if not self._still_pending(connection, job):
                return False
            connection.execute(delete(vector_store_chunks).where(vector_store_chunks.c.vector_store_id == job.vector_store_id,
                                                                 vector_store_chunks.c.file_id == job.file_id))
            if chunks:
                connection.execute(insert(vector_store_chunks), [
                    {"vector_store_id": job.vector_store_id, "file_id": job.file_id, "n": n, "text": text, "vector": vector}
                    for n, (text, vector) in enumerate(chunks)])
            usage = sum(len(text.encode()) + len(vector) for text, vector in chunks)
            self._set(connection, job, status="completed", usage_bytes=usage)
            return True

    def fail(self, job: Pending, code: str, message: str) -> None:
        with self._writing() as connection:
            if self._still_pending(connection, job):
                self._set(connection, job, status="failed", last_error={"code": code, "message": message})

    @staticmethod
    def _still_pending(connection: Connection, job: Pending) -> bool:
        row = connection.execute(ONE, {"vector_store_id": job.vector_store_id, "id": job.file_id}).mappings().first()
        return row is not None and row["seq"] == job.seq and row["status"] == "in_progress"

    @staticmethod
    def _set(connection: Connection, job: Pending, **values) -> None:
        connection.execute(update(vector_store_files).where(and_(vector_store_files.c.vector_store_id == job.vector_store_id,
                                                                 vector_store_files.c.id == job.file_id)).values(**values))
