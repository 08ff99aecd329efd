"""Vector stores: their files, file batches, and the chunks of text with their vectors and a full-text index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: an FTS5 index over the chunks' text, kept by triggers (an external-content table: the text is stored once).
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(text, content='vector_store_chunks', content_rowid='seq')",
    ("CREATE TRIGGER vector_store_chunks_ai AFTER INSERT ON vector_store_chunks BEGIN "
     "INSERT INTO vector_store_chunks_fts(rowid, text) VALUES (new.seq, new.text); END"),
    ("CREATE TRIGGER vector_store_chunks_ad AFTER DELETE ON vector_store_chunks BEGIN "
     "INSERT INTO vector_store_chunks_fts(vector_store_chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text); END"),
]
# PostgreSQL: its full-text search over an expression index (simple configuration: no language's stemming).
POSTGRES_FTS = ["CREATE INDEX ix_vector_store_chunks_fts ON vector_store_chunks USING gin (to_tsvector('simple', text))"]


def upgrade() -> None:
    op.create_table(
        "vector_stores",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("expires_after", sa.JSON),
        sa.Column("last_active_at", sa.Integer, nullable=False),
        sa.Column("embedding_model", sa.Text, nullable=False),
    )
    op.create_table(
        "vector_store_file_batches",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("vector_store_id", sa.String(64), sa.ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "vector_store_files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("vector_store_id", sa.String(64), sa.ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.JSON),
        sa.Column("chunking_strategy", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON),
        sa.Column("usage_bytes", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("vector_store_id", "id", name="uq_vector_store_files_pair"),
        sqlite_autoincrement=True,  # a seq is never used again: ingestion tells a file added again by it
    )
    op.create_index("ix_vector_store_files_order", "vector_store_files", ["vector_store_id", "created_at", "seq"])
    op.create_index("ix_vector_store_files_status", "vector_store_files", ["status"])
    op.create_table(
        "vector_store_chunks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("vector_store_id", sa.String(64), sa.ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
        sa.Column("file_id", sa.String(64), sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,  # a seq is never used again: search's cached vectors are checked by the newest
    )
    op.create_index("ix_vector_store_chunks_file", "vector_store_chunks", ["vector_store_id", "file_id", "n"])
    for statement in {"sqlite": SQLITE_FTS, "postgresql": POSTGRES_FTS}.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE vector_store_chunks_fts")
    op.drop_table("vector_store_chunks")
    op.drop_index("ix_vector_store_files_status", table_name="vector_store_files")
    op.drop_index("ix_vector_store_files_order", table_name="vector_store_files")
    op.drop_table("vector_store_files")
    op.drop_table("vector_store_file_batches")
    op.drop_table("vector_stores")
