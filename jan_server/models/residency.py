"""Which local models are loaded, and which of them may be stopped: to make room under --max-loaded-models (the
least recently used idle ones) or after --idle-timeout seconds without use.

A model is busy while a request holds a lease on it (from getting its runner until its job is submitted) or its
scheduler has jobs waiting or generating; a busy model is never chosen. Leases are taken and models chosen under
one lock, and a chosen model leaves the table at once, so it is never handed out again: a request that comes for
it later starts it anew. Whoever takes a runner out of the table (stop, eviction, idle unload) closes it.
"""

from __future__ import annotations

import collections
import threading
import time

from jan_server.errors import UnavailableError
from jan_server.models.batching import Runner


def busy(runner: Runner) -> bool:
    stats = runner.scheduler.stats()
    return bool(stats["queued_requests"] or stats["busy_slots"])


class Residency:
    def __init__(self, max_loaded: int | None = None, idle_timeout: float | None = None):
        self.max_loaded = max_loaded or None
        self.idle_timeout = idle_timeout or None
        self._lock = threading.Lock()
        self._runners: dict[str, Runner] = {}
        self._used: dict[str, float] = {}  # model id -> time.monotonic() of its last use
        self._leases: collections.Counter[str] = collections.Counter()
        self._starting: set[str] = set()  # counted against max_loaded while they load

    def __iter__(self):
        return iter(list(self._runners))

    def get(self, model_id: str) -> Runner | None:
        return self._runners.get(model_id)

    def lease(self, model_id: str) -> Runner | None:
        """The loaded model, kept from being stopped until `release`; None if it is not loaded."""
        with self._lock:
            runner = self._runners.get(model_id)
            if runner is not None:
                self._leases[model_id] += 1
                self._used[model_id] = time.monotonic()
            return runner

    def release(self, model_id: str) -> None:
        with self._lock:
            self._leases[model_id] -= 1
            if self._leases[model_id] <= 0:
                del self._leases[model_id]
            self._used[model_id] = time.monotonic()

    def make_room(self, model_id: str) -> list[tuple[str, Runner]]:
        """Count `model_id` as loading, taking out the least recently used idle models it needs room from (to be
        closed by the caller); 503 `models_busy` if every loaded model is busy."""
        with self._lock:
            excess = len(self._runners) + len(self._starting) + 1 - self.max_loaded if self.max_loaded else 0
            idle = sorted((self._used[key], key) for key, runner in self._runners.items() if self._idle(key, runner)) if excess > 0 else []
            if excess > len(idle):
                raise UnavailableError(
                    f"All {self.max_loaded} loaded models are busy, so model '{model_id}' cannot be started now; retry "
                    "shortly (or start the server with a larger --max-loaded-models).",
                    code="models_busy",
                )
            self._starting.add(model_id)
            return [(key, self._take(key)) for _, key in idle[:excess]]

    def loaded(self, model_id: str, runner: Runner | None, leased: bool) -> None:
        """`model_id` has finished loading (runner None: it failed), leased by its starter if `leased`."""
        with self._lock:
            self._starting.discard(model_id)
            if runner is not None:
                self._runners[model_id] = runner
                self._used[model_id] = time.monotonic()
                if leased:
                    self._leases[model_id] += 1

    def take(self, model_id: str) -> Runner | None:
        """Take the model out of the table (to stop it), busy or not."""
        with self._lock:
            return self._take(model_id) if model_id in self._runners else None

    def idle(self, model_id: str) -> Runner | None:
        """Take the model out if it has been idle for idle_timeout seconds (hold its lock); a busy one counts as used now."""
        if not self.idle_timeout:
            return None
        now = time.monotonic()
        with self._lock:
            runner = self._runners.get(model_id)
            if runner is None:
                return None
            if not self._idle(model_id, runner):
                self._used[model_id] = now
            return self._take(model_id) if now - self._used[model_id] >= self.idle_timeout else None

    def _idle(self, key: str, runner: Runner) -> bool:
        return not self._leases[key] and not busy(runner)

    def _take(self, key: str) -> Runner:
        self._used.pop(key, None)
        return self._runners.pop(key)
