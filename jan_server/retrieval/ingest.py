"""Ingestion: one worker thread turns the vector stores' files `in_progress` into chunks with vectors.

It reads the database for files waiting (so a restart resumes those a stop left, and files another server added
are found by its next look), extracts their text, chunks it by the store's embedding model's tokens and embeds
the chunks in batches on that model's embedding context. Chats come first: before each batch it waits while the
model has chats running or queued (up to YIELD_S, so ingestion is never starved). A remote model's chunks are by
estimated tokens (jan_server.retrieval.chunking) and embedded by its upstream. A file that cannot be read or
embedded is `failed` with OpenAI's last_error; one deleted or cancelled meanwhile is dropped.
"""

from __future__ import annotations

import logging
import threading
import time

from jan_server.errors import (
    ApiError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from jan_server.retrieval import chunking, extract
from jan_server.retrieval import upstream as remote
from jan_server.storage.store import Store
from jan_server.storage.vector_store_files import Pending

log = logging.getLogger(__name__)

#: Chunks embedded per call: a chat or an embeddings request waits for at most one such batch.
BATCH = 16
#: How long a batch waits for the model's chats to finish, and how often it looks.
YIELD_S = 10.0
LOOK_S = 0.05
#: How often the worker looks for files it was not told of (added by another server on the database).
POLL_S = 5.0


class Ingestion:
    def __init__(self, store: Store, models):
        self.store = store
        self.models = models
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingestion", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Look for waiting files now (a request just added some)."""
        self._wake.set()

    def close(self) -> None:
        """Stop after the batch under way; what is left stays `in_progress` for the next start."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def embedding_model(self, requested: str | None, default: str) -> str:
        """The model a new store records: the one asked for, else the server's (local or remote)."""
        model_id = requested or default
        param = "embedding_model"
        try:
            found = self.models.registry.find(self.models.resolve(model_id))
        except InvalidRequestError:
            found = None
        if found is None:
            raise NotFoundError("model", model_id, param=param)
        return model_id

    def text(self, store_id: str, file_id: str) -> str | None:
        """The text extracted from a store's file once it is ingested; None before."""
        if self.store.vector_store_files.get(store_id, file_id)["status"] != "completed":
            return None
        file, parts = self.store.files.content(file_id)
        return extract.text_of(b"".join(parts), file["filename"])

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()
            try:
                for job in self.store.vector_store_files.pending():
                    if self._closed.is_set():
                        return
                    self.ingest(job)
            except Exception:  # the database went away for a moment: look again later
                log.exception("ingestion could not read the waiting files")
            self._wake.wait(POLL_S)

    def ingest(self, job: Pending) -> None:
        try:
            _, parts = self.store.files.content(job.file_id)
            text = extract.text_of(b"".join(parts), job.filename)
            chunks = self._embedded(job, text)
        except extract.Unreadable as exc:
            self.store.vector_store_files.fail(job, exc.code, exc.message)
        except NotFoundError as exc:
            if exc.code != "file_not_found":  # the store's model is gone (a file deleted meanwhile left the store too)
                self.store.vector_store_files.fail(job, "server_error", exc.message)
        except ConflictError as exc:
            if exc.code != "model_stopping":  # a stopping model: left in progress, taken again next time
                self.store.vector_store_files.fail(job, "server_error", exc.message)
        except ApiError as exc:
            self.store.vector_store_files.fail(job, "server_error", exc.message)
        except Exception as exc:
            log.exception("ingesting %s into %s failed", job.file_id, job.vector_store_id)
            self.store.vector_store_files.fail(job, "server_error", f"Ingestion failed: {exc}")
        else:
            if chunks is not None:
                self.store.vector_store_files.finish(job, chunks)

    def _embedded(self, job: Pending, text: str) -> list[tuple[str, bytes]] | None:
        """(text, float32 vector bytes) of each chunk; None if the server is closing."""
        if upstream := self.models.remote_for(job.embedding_model):
            pieces = chunking.estimated(text, job.chunking)
            vectors = []
            for start in range(0, len(pieces), BATCH):
                if self._closed.is_set():
                    return None
                vectors += remote.embed(upstream, pieces[start:start + BATCH])
            return [(piece, vector.astype("<f4").tobytes()) for piece, vector in zip(pieces, vectors)]
        with self.models.serving(job.embedding_model) as runner:
            embedder = runner.embedder()
            pieces = chunking.chunks(embedder.model, text, job.chunking)
            vectors = []
            for start in range(0, len(pieces), BATCH):
                if self._closed.is_set():
                    return None
                self._yield_to_chats(runner)
                found, _ = embedder.embed([tokens for _, tokens in pieces[start:start + BATCH]])
                vectors += found
        return [(piece, vector.astype("<f4").tobytes()) for (piece, _), vector in zip(pieces, vectors)]

    def _yield_to_chats(self, runner) -> None:
        deadline = time.monotonic() + YIELD_S
        while time.monotonic() < deadline and not self._closed.is_set():
            stats = runner.scheduler.stats()
            if not stats["busy_slots"] and not stats["queued_requests"]:
                return
            time.sleep(LOOK_S)
