"""The store: one database, and the queries of each resource on it (threads, messages, assistants, responses,
conversations, files, vector stores)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from jan_server.storage import db
from jan_server.storage.assistants import Assistants
from jan_server.storage.conversations import Conversations
from jan_server.storage.files import Files
from jan_server.storage.messages import Messages
from jan_server.storage.responses import Responses
from jan_server.storage.threads import Threads
from jan_server.storage.vector_store_chunks import Chunks
from jan_server.storage.vector_store_files import VectorStoreFiles
from jan_server.storage.vector_stores import VectorStores


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        write_lock = threading.Lock()  # one for all: SQLite has one writer per database
        self.threads = Threads(engine, write_lock)
        self.messages = Messages(engine, write_lock)
        self.assistants = Assistants(engine, write_lock)
        self.responses = Responses(engine, write_lock)
        self.conversations = Conversations(engine, write_lock)
        self.files = Files(engine, write_lock)
        self.vector_stores = VectorStores(engine, write_lock)
        self.vector_store_files = VectorStoreFiles(engine, write_lock)
        self.chunks = Chunks(engine, write_lock)

    @classmethod
    def open(cls, url: str) -> "Store":
        """Connect to `url` and apply any pending migrations."""
        engine = db.create(url)
        db.migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()
