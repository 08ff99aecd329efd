"""What search reads of the vector stores' chunks: their vectors, a full-text ranking of their text (SQLite FTS5's
BM25, PostgreSQL's ts_rank; both indexes are made by migrations/versions/0005_vector_stores.py), their text."""

from __future__ import annotations

import re

from sqlalchemy import bindparam, func, select, text

from jan_server.storage import db
from jan_server.storage.queries import Queries
from jan_server.storage.tables import files, vector_store_chunks, vector_store_files

VERSION = select(func.count().label("count"), func.coalesce(func.max(vector_store_chunks.c.seq), 0).label("newest")).where(
    vector_store_chunks.c.vector_store_id == bindparam("vector_store_id"))
VECTORS = (select(vector_store_chunks.c.seq, vector_store_chunks.c.file_id, vector_store_chunks.c.vector)
           .where(vector_store_chunks.c.vector_store_id == bindparam("vector_store_id")).order_by(vector_store_chunks.c.seq))
TEXTS = select(vector_store_chunks.c.seq, vector_store_chunks.c.text).where(vector_store_chunks.c.seq.in_(bindparam("seqs", expanding=True)))
FILES = (select(vector_store_files.c.id, vector_store_files.c.attributes, files.c.filename)
         .join(files, files.c.id == vector_store_files.c.id)
         .where(vector_store_files.c.vector_store_id == bindparam("vector_store_id"), vector_store_files.c.status == "completed"))
# Lower bm25() is better; the words are quoted, so FTS5's query syntax never sees the user's text.
SQLITE_LEXICAL = text(
    "SELECT c.seq FROM vector_store_chunks_fts f JOIN vector_store_chunks c ON c.seq = f.rowid "
    "WHERE vector_store_chunks_fts MATCH :query AND c.vector_store_id = :vector_store_id ORDER BY bm25(vector_store_chunks_fts) LIMIT :limit")
POSTGRES_LEXICAL = text(
    "SELECT seq FROM vector_store_chunks WHERE vector_store_id = :vector_store_id AND to_tsvector('simple', text) @@ to_tsquery('simple', :query) "
    "ORDER BY ts_rank(to_tsvector('simple', text), to_tsquery('simple', :query)) DESC, seq LIMIT :limit")


def words(query: str) -> list[str]:
    return re.findall(r"\w+", query.lower())


class Chunks(Queries):
    def version(self, store_id: str) -> tuple[int, int]:
        """(count, newest seq) of the store's chunks: what a cached copy of its vectors is checked against."""
        row = db.read_one_statement(self.engine, VERSION, {"vector_store_id": store_id})[0]
        return row["count"], row["newest"]

    def vectors(self, store_id: str) -> list[dict]:
        return db.read_one_statement(self.engine, VECTORS, {"vector_store_id": store_id})

    def lexical(self, store_id: str, query: str, limit: int) -> list[int]:
        """The seqs of the chunks that hold any word of the query, best first."""
        found = words(query)
        if not found:
            return []
        if self.engine.dialect.name == "postgresql":
            statement, match = POSTGRES_LEXICAL, " | ".join(found)
        else:
            statement, match = SQLITE_LEXICAL, " OR ".join(f'"{word}"' for word in found)
        with db.reading(self.engine) as connection:
            return list(connection.execute(statement, {"query": match, "vector_store_id": store_id, "limit": limit}).scalars())

    def texts(self, seqs: list[int]) -> dict[int, str]:
        if not seqs:
            return {}
        with db.reading(self.engine) as connection:  # an expanding IN: not for read_one_statement's compiled SQL
            return dict(connection.execute(TEXTS, {"seqs": seqs}).all())

    def files(self, store_id: str) -> dict[str, dict]:
        """{file id: {"attributes", "filename"}} of the store's searchable (completed) files."""
        rows = db.read_one_statement(self.engine, FILES, {"vector_store_id": store_id})
        return {row["id"]: {"attributes": row["attributes"], "filename": row["filename"]} for row in rows}
