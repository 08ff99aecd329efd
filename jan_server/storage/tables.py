"""The schema as SQLAlchemy Core tables; migrations/versions/ creates it, the store queries it.

Every table has an integer `seq`: many rows share a `created_at` second, and lists break ties by insertion order.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint, false

metadata = MetaData()

threads = Table(
    "threads",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("title", Text),
    Column("metadata", JSON, nullable=False),
    Column("tool_resources", JSON),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", JSON, nullable=False),
    Column("file_ids", JSON, nullable=False),
    Column("attachments", JSON),
    Column("metadata", JSON, nullable=False),
    Column("assistant_id", String(64)),
    Column("run_id", String(64)),
    Index("ix_messages_thread_order", "thread_id", "created_at", "seq"),
)

assistants = Table(
    "assistants",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("name", Text),
    Column("description", Text),
    Column("model", Text, nullable=False),
    Column("models", JSON, nullable=False),
    Column("instructions", Text),
    Column("avatar", Text),
    Column("tools", JSON, nullable=False),
    Column("tool_resources", JSON),
    Column("metadata", JSON, nullable=False),
    Column("temperature", Float),
    Column("top_p", Float),
    Column("response_format", JSON),
)

thread_assistants = Table(
    "thread_assistants",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("assistant_id", String(64), ForeignKey("assistants.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("overrides", JSON, nullable=False),
    UniqueConstraint("thread_id", "assistant_id", name="uq_thread_assistants_pair"),
)

# Responses and conversations (migrations/versions/0002_responses.py). A response keeps its whole API object in
# `object`; `status`, `background` and `previous_response_id` are columns too, for the queries that need them.
# An unfinished (background) one has the process that runs it as `owner`, which refreshes `heartbeat` (time.time())
# while it runs and reads `cancel_requested` (0003_response_owners.py).
responses = Table(
    "responses",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("background", Boolean, nullable=False),
    Column("previous_response_id", String(64)),  # no foreign key: deleting a response leaves its successors
    Column("object", JSON, nullable=False),
    Column("owner", String(64)),
    Column("heartbeat", Float),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Index("ix_responses_status", "status"),
)

response_items = Table(
    "response_items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("response_id", String(64), ForeignKey("responses.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("item", JSON, nullable=False),
    Index("ix_response_items_order", "response_id", "created_at", "seq"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("metadata", JSON, nullable=False),
)

conversation_items = Table(
    "conversation_items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("conversation_id", String(64), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("item", JSON, nullable=False),
    Index("ix_conversation_items_order", "conversation_id", "created_at", "seq"),
)

# Uploaded files (migrations/versions/0004_files.py). Their bytes live in the database too, in `file_chunks` of up to
# 1 MiB, so every replica on one database serves every file and a file is stored whole or not at all.
files = Table(
    "files",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("filename", Text, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Index("ix_files_purpose", "purpose", "created_at", "seq"),
)

file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_id", String(64), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Vector stores (migrations/versions/0005_vector_stores.py). A store's file is a row of `vector_store_files` whose id
# is the file's (deleting the file deletes it and its chunks everywhere); its chunks hold their text and their
# vector (float32 bytes), and a full-text index over the text (SQLite FTS5 or PostgreSQL's, made by the migration).
# Their seqs are never used again (AUTOINCREMENT on SQLite), so a row's seq tells it from one that replaced it.
vector_stores = Table(
    "vector_stores",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("metadata", JSON, nullable=False),
    Column("expires_after", JSON),
    Column("last_active_at", Integer, nullable=False),
    Column("embedding_model", Text, nullable=False),
)

vector_store_file_batches = Table(
    "vector_store_file_batches",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("vector_store_id", String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("cancelled", Boolean, nullable=False),
)

vector_store_files = Table(
    "vector_store_files",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
    Column("vector_store_id", String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
    Column("batch_id", String(64)),
    Column("created_at", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("last_error", JSON),
    Column("chunking_strategy", JSON, nullable=False),
    Column("attributes", JSON),
    Column("usage_bytes", BigInteger, nullable=False),
    UniqueConstraint("vector_store_id", "id", name="uq_vector_store_files_pair"),
    Index("ix_vector_store_files_order", "vector_store_id", "created_at", "seq"),
    Index("ix_vector_store_files_status", "status"),
    sqlite_autoincrement=True,
)

vector_store_chunks = Table(
    "vector_store_chunks",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("vector_store_id", String(64), ForeignKey("vector_stores.id", ondelete="CASCADE"), nullable=False),
    Column("file_id", String(64), ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
    Column("n", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Index("ix_vector_store_chunks_file", "vector_store_id", "file_id", "n"),
    sqlite_autoincrement=True,
)
