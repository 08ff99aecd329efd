"""The prompt cache beyond the slots, in host memory: the KV cells of sequences evicted from their slots, kept by
their tokens so that a later prompt starting with them restores them and reads only the rest.

When a job is seated in a slot whose cells hold another conversation it would lose (at least `COPY_GAIN` tokens
of it), the scheduler saves the slot's cells first (llama.cpp's per-sequence state: `Backend.save`); a job whose
prompt an entry here serves better than any slot (by `COPY_GAIN` tokens or more) has that entry's cells restored
into its slot (`Backend.restore`) with the entry's kept logits and count of exact cells, so it then goes on as if
the slot had held them all along (jan_server.models.seating).

One cache serves every model of a server, within one budget in bytes: each entry is tagged with its model's
`key` (its weights and load settings: another model's or context's cells never match), and the least recently
used entries go first. An entry whose tokens start another's is dropped for it (the longer one serves both).
An entry larger than the budget is not kept. Every scheduler thread uses it: it takes a lock.

With a `disk` tier (jan_server.models.disk_cache), every entry kept is written there too, and an entry found only
there (after a restart, or once this tier let it go) is loaded back when it serves a prompt best.
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass

from jan_server.models.disk_cache import DiskCache
from jan_server.models.slots import SlotCache, common_prefix

MiB = 1024 * 1024
DEFAULT_MAX = 8192 * MiB  # llama-server's --cache-ram default


def host_budget(mib: int | None) -> int:
    """The host cache's budget in bytes: `mib`, or by default a quarter of the memory available now (at most
    DEFAULT_MAX)."""
    if mib is not None:
        return max(0, mib) * MiB
    return min(DEFAULT_MAX, available_memory() // 4)


def available_memory() -> int:
    """The bytes of memory available now."""
    try:  # Linux's estimate of what can be had without swapping (free memory alone leaves out the page cache)
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0


@dataclass
class Entry:
    """A sequence's cells (`state`, opaque to the scheduler) and what they hold (`cells`: tokens, logits, exact)."""

    key: str
    cells: SlotCache
    state: bytes | memoryview

    @property
    def size(self) -> int:
        logits = getattr(self.cells.logits, "nbytes", 0)
        return len(self.state) + logits + 8 * len(self.cells.tokens)


class HostCache:
    """Entries, least recently used first, within `budget` bytes (0: this tier keeps nothing), over an optional
    `disk` tier."""

    def __init__(self, budget: int, disk: DiskCache | None = None):
        self.budget = budget
        self.disk = disk
        self.used = 0
        self._entries: collections.OrderedDict[int, Entry] = collections.OrderedDict()
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return bool(self.budget or self.disk)

    def best(self, key: str, prompt: list[int], exact: bool, beyond: int = 0) -> tuple[Entry | None, int]:
        """The entry of model `key` holding the longest start of `prompt` (see SlotCache.share), from memory or
        else from disk, and how many tokens; the entry counts as used. One from disk is read only if it holds at
        least `beyond` tokens (what the slots hold is not worth a read)."""
        entry, shared = self._best_held(key, prompt, exact)
        stored, on_disk = self.disk.best(key, prompt, exact) if self.disk else (None, 0)
        if on_disk > shared and on_disk >= beyond:
            loaded = self.disk.load(stored)
            if loaded is not None:
                entry = Entry(key, *loaded)
                self._keep(entry)
                return entry, on_disk
        return entry, shared

    def forget(self, entry: Entry) -> None:
        """Drop an entry that could not be restored."""
        with self._lock:
            for number in [n for n, held in self._entries.items() if held is entry]:
                self._drop(number)

    def flush(self) -> None:
        """Wait for the disk tier's writes."""
        if self.disk:
            self.disk.flush()

    def _best_held(self, key: str, prompt: list[int], exact: bool) -> tuple[Entry | None, int]:
        with self._lock:
            found, shared = None, 0
            for number, entry in self._entries.items():
                if entry.key == key:
                    share = entry.cells.share(prompt, exact)
                    if share > shared:
                        found, shared = number, share
            if found is None:
                return None, 0
            self._entries.move_to_end(found)
            return self._entries[found], shared

    def wants(self, key: str, cells: SlotCache) -> bool:
        """Whether saving these cells would add anything: no entry holds them (as many of them exact) already."""
        if not self.enabled:
            return False
        with self._lock:
            return not any(self._covers(entry, key, cells) for entry in self._entries.values())

    def put(self, key: str, cells: SlotCache, state: bytes | memoryview) -> None:
        """Keep an entry (and write it to disk), dropping those it covers and then the least recently used until
        it fits."""
        if self.disk:
            self.disk.put(key, cells, state)
        self._keep(Entry(key, cells, state))

    def _keep(self, entry: Entry) -> None:
        if entry.size > self.budget:
            return
        with self._lock:
            for number in [n for n, old in self._entries.items() if self._covers(entry, old.key, old.cells)]:
                self._drop(number)
            while self.used + entry.size > self.budget:
                self._drop(next(iter(self._entries)))
            self._entries[self._next] = entry
            self._next += 1
            self.used += entry.size

    def _drop(self, number: int) -> None:
        self.used -= self._entries.pop(number).size

    @staticmethod
    def _covers(entry: Entry, key: str, cells: SlotCache) -> bool:
        """Whether `entry` serves every prompt that `cells` (of model `key`) would."""
        held = entry.cells
        return (entry.key == key and common_prefix(held.tokens, cells.tokens) == len(cells.tokens)
                and held.exact >= min(cells.exact, len(cells.tokens))
                and (cells.logits is None or held.logits_at == cells.logits_at and held.logits is not None))
