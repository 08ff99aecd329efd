"""The prompt cache's second tier, on disk in the data dir: what the host tier keeps is also written here (by a
thread of its own, so the decode loop never waits for the disk), so that after a restart a conversation's next
turn restores its cells instead of reading it all again.

Each entry is one file: a header line (magic, then the JSON of its model key, tokens, exact count, where its
logits are and how long each part is), the state, the logits (float32), then the SHA-256 of all that. It is
written to a temporary name, synced and renamed into place, so a crash mid-write leaves at worst a temporary
file, which the next start deletes; a file whose length or checksum is wrong (torn, or damaged later) is never
loaded: it is skipped and deleted. The entries' model keys (jan_server.models.batching.cache_key) name the
weights file and load settings, so another model or context never gets them. The tier keeps within `budget`
bytes, the least recently used files out.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jan_server.models.slots import SlotCache

log = logging.getLogger(__name__)
MAGIC = b"jan-prompt-cache 1 "
SUFFIX = ".kv"


@dataclass
class Stored:
    """An entry's file and what its header says it holds."""

    path: Path
    key: str
    cells: SlotCache  # its logits are not loaded until the entry is
    size: int


class DiskCache:
    """The entries in `directory`, within `budget` bytes; `put` queues a write, `load` reads and checks one."""

    def __init__(self, directory: Path, budget: int):
        self.directory = directory
        self.budget = budget
        self._stored: collections.OrderedDict[Path, Stored] = collections.OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._writes: queue.Queue = queue.Queue()
        directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(directory.iterdir(), key=lambda path: path.stat().st_mtime):  # oldest first
            stored = self._header(path) if path.suffix == SUFFIX else None
            if stored is None:
                path.unlink(missing_ok=True)  # a temporary file a crash left, or a torn entry
            else:
                self._stored[path] = stored
        self._writer = threading.Thread(target=self._write_all, name="prompt-cache-writer", daemon=True)
        self._writer.start()

    def best(self, key: str, prompt: list[int], exact: bool) -> tuple[Stored | None, int]:
        with self._lock:
            shares = [(stored, stored.cells.share(prompt, exact)) for stored in self._stored.values() if stored.key == key]
        stored, shared = max(shares, key=lambda share: share[1], default=(None, 0))
        return (stored, shared) if shared else (None, 0)

    def load(self, stored: Stored) -> tuple[SlotCache, memoryview] | None:
        """The entry's cells and state (a view of the file's bytes, not a copy), or None (and the file deleted) if it
        is not whole."""
        try:
            data = stored.path.read_bytes()
            start = data.index(b"\n") + 1
            meta = json.loads(data[len(MAGIC):start - 1])
            view = memoryview(data)
            body = view[start:]
            if len(body) != meta["state"] + meta["logits"] * 4 + 32 or hashlib.sha256(view[:-32]).digest() != data[-32:]:
                raise ValueError("its length or checksum is wrong")
        except (OSError, ValueError, KeyError) as exc:
            log.warning("prompt cache entry %s skipped: %s", stored.path.name, exc)
            self._forget(stored.path)
            return None
        os.utime(stored.path)  # the most recently used now, also for the next start
        with self._lock:
            if stored.path in self._stored:
                self._stored.move_to_end(stored.path)
        state = body[:meta["state"]]
        logits = np.frombuffer(body[meta["state"]:len(body) - 32], dtype=np.float32).copy() if meta["logits"] else None
        cells = SlotCache(list(meta["tokens"]), logits, meta["logits_at"], meta["exact"])
        return cells, state

    def put(self, key: str, cells: SlotCache, state: bytes | memoryview) -> None:
        self._writes.put((key, cells, state))

    def flush(self) -> None:
        """Wait until every queued entry is written."""
        self._writes.join()

    def _write_all(self) -> None:
        while True:
            key, cells, state = self._writes.get()
            try:
                self._write(key, cells, state)
            except Exception:
                log.exception("could not write a prompt cache entry")
            finally:
                self._writes.task_done()

    def _write(self, key: str, cells: SlotCache, state: bytes | memoryview) -> None:
        logits = b"" if cells.logits is None else np.asarray(cells.logits, dtype=np.float32).tobytes()
        meta = {"key": key, "tokens": cells.tokens, "exact": cells.exact, "logits_at": cells.logits_at,
                "state": len(state), "logits": len(logits) // 4}
        head = MAGIC + json.dumps(meta, separators=(",", ":")).encode() + b"\n"
        digest = hashlib.sha256(head)
        for part in (state, logits):  # not concatenated: a copy of tens of MB under the GIL
            digest.update(part)
        size = len(head) + len(state) + len(logits) + 32
        if size > self.budget:
            return
        path = self.directory / f"{digest.hexdigest()[:32]}{SUFFIX}"
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            for part in (head, state, logits, digest.digest()):
                file.write(part)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        with self._lock:
            for covered in [p for p, old in self._stored.items() if old.key == key and old.cells.exact <= cells.exact
                            and old.cells.tokens == cells.tokens[:len(old.cells.tokens)] and p != path]:
                self._stored.pop(covered)
                covered.unlink(missing_ok=True)
            self._stored[path] = Stored(path, key, SlotCache(list(cells.tokens), None, cells.logits_at, cells.exact), size)
            self._stored.move_to_end(path)
            while sum(stored.size for stored in self._stored.values()) > self.budget:
                oldest, _ = self._stored.popitem(last=False)
                oldest.unlink(missing_ok=True)

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._stored.pop(path, None)
        path.unlink(missing_ok=True)

    def _header(self, path: Path) -> Stored | None:
        """What an entry's header says, if its length agrees (its checksum is checked when it is loaded)."""
        try:
            with open(path, "rb") as file:
                header = file.readline()
            meta = json.loads(header[len(MAGIC):]) if header.startswith(MAGIC) else None
            size = path.stat().st_size
            if meta is None or size != len(header) + meta["state"] + meta["logits"] * 4 + 32:
                return None
            return Stored(path, meta["key"], SlotCache(list(meta["tokens"]), None, meta["logits_at"], meta["exact"]), size)
        except (OSError, ValueError, KeyError):
            return None
