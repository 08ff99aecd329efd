"""Continuous batching in pure Python: one thread per running model decodes every live sequence together.

The scheduler has `n_slots` slots (sequence ids of one backend context). Every step it admits waiting jobs (FIFO)
into free slots (jan_server.models.seating: a job is seated where the cache holds most of its prompt and reads
only the rest), decodes one batch (jan_server.models.decoding: the next token of every generating sequence plus
prompt chunks), samples each sequence, hands the text to its job's event queue and retires finished or cancelled
sequences, freeing their slots at once. A free slot keeps its cells and its prompt's last logits as a cache
(jan_server.models.slots); cells a slot must give up go to the prompt cache beyond the slots, in host memory
(jan_server.models.prompt_cache) and on disk (jan_server.models.disk_cache). When the slots share their cells
(a unified KV cache), idle slots give their cells up to the prompt cache as a job is seated (every read attends
over them), and if generating sequences still run out, the newest is preempted and resumes later from the prompt
cache (jan_server.models.room). With nothing to do, the thread saves the idle slots' cells to the prompt cache
ahead of that, one slot at a time (jan_server.models.room).

Failures stay as small as they can: an error while seating or sampling one job fails that job alone (500
`generation_failed`); a failed decode fails the sequences that were in that batch. If the thread itself dies,
every waiting and live job gets a 500 `scheduler_failed` and later submits are refused (`failed`: the model
manager then shows the model in state `error` and loads it anew for the next request). `close()` fails the
waiting and live jobs with a 503 `model_stopping` and returns after at most the decode under way, or after
`CLOSE_TIMEOUT` seconds if that decode takes longer (stuck): the thread, a daemon, is then left to end with it, and
the backend must not be freed before it has.

The thread runs `DECODE_NICE` steps nicer than the server (on Linux), and so do the compute threads llama.cpp's
OpenMP starts from it (a thread inherits its creator's niceness): the HTTP side's threads, woken for each token,
then take a core at once instead of waiting behind compute threads that never sleep (docs/BENCHMARKS.md, run 15).

The scheduler imports nothing of llama.cpp: it drives a `Backend` (jan_server.models.backend).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading

from jan_server.errors import ApiError, ConflictError, RateLimitError, ServerError, UnavailableError
from jan_server.models.backend import Backend, batch_size
from jan_server.models.decoding import Decoding
from jan_server.models.jobs import Job
from jan_server.models.prompt_cache import HostCache
from jan_server.models.room import Room
from jan_server.models.seating import Seating, Sequence
from jan_server.models.slots import FreeSlots

log = logging.getLogger(__name__)
DECODE_NICE = 5
CLOSE_TIMEOUT = 60.0  # seconds close() waits for the decode under way: far longer than a step takes


class Scheduler(Seating, Room, Decoding):
    """The FIFO of waiting jobs, the slots and the thread that batches them on one backend. Its state (the queue,
    the live sequences, the free slots) is the thread's alone, but for the queue and flags that submit and close
    touch under `_ready`; seating and the decode step are parts of it (mixins) kept in modules of their own."""

    def __init__(self, backend: Backend, *, model_id: str, n_slots: int, n_batch: int, max_queued: int,
                 cache: HostCache | None = None, cache_key: str = ""):
        self.backend = backend
        self.model_id = model_id
        self.cache = cache if cache is not None else HostCache(0)  # the host tier of the prompt cache, maybe shared with other models
        self.cache_key = cache_key  # the model's weights and load settings, whose cells its entries hold
        self.n_batch = batch_size(n_batch, n_slots, backend.min_chunk)
        self.max_queued = max_queued
        self._waiting: collections.deque[list[Job]] = collections.deque()  # groups of jobs
        self._ready = threading.Condition()  # guards _waiting, _stopping, _failed, cancelled_requests
        self._live: list[Sequence] = []
        self._preempted: collections.deque[Sequence] = collections.deque()  # to resume before any new job
        self._free = FreeSlots(n_slots)
        self._stopping = False
        self._failed = False
        self.generated_tokens = 0
        self.prompt_tokens_read = 0  # prompt tokens decoded
        self.cached_prompt_tokens = 0  # prompt tokens found in a slot's cells, not decoded
        self.restored_prompt_tokens = 0  # of those, the tokens restored from the host cache into a slot
        self.preempted_sequences = 0  # times a sequence gave its cells up to others (jan_server.models.room)
        self.admitted = 0
        self.completed_requests = 0
        self.cancelled_requests = 0
        self.thread = threading.Thread(target=self._run, name=f"model:{model_id}", daemon=True)
        self.thread.start()

    def stats(self) -> dict:
        return {
            "generated_tokens": self.generated_tokens,
            "prompt_tokens_read": self.prompt_tokens_read,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "restored_prompt_tokens": self.restored_prompt_tokens,
            "prompt_cache_bytes": self.cache.used,
            "preempted_sequences": self.preempted_sequences,
            "completed_requests": self.completed_requests,
            "cancelled_requests": self.cancelled_requests,
            "queued_requests": len(self._waiting),
            "busy_slots": len(self._live),
        }

    @property
    def failed(self) -> bool:
        """Whether the thread died (see the module's docstring)."""
        return self._failed

    def submit(self, job: Job) -> Job:
        return self.submit_group([job])[0]

    def submit_group(self, jobs: list[Job]) -> list[Job]:
        """Queue jobs with the same prompt as one group (at most n_slots of them) that shares one prefill."""
        with self._ready:
            if self._failed:
                raise self.failure()
            if self._stopping:
                raise ConflictError(f"Model '{self.model_id}' is stopping.", param="model", code="model_stopping")
            if len(self._waiting) >= self.max_queued:
                self._drop_cancelled()
            if len(self._waiting) >= self.max_queued:
                raise RateLimitError(
                    f"Model '{self.model_id}' already has {self.max_queued} requests waiting; retry shortly.",
                    retry_after=1,
                )
            for job in jobs:
                job.alive = self.thread.is_alive
            self._waiting.append(jobs)
            self._ready.notify()
        return jobs

    def close(self) -> bool:
        """Refuse new jobs, fail the waiting and live ones with 503 `model_stopping`, and wait for the thread (at
        most CLOSE_TIMEOUT seconds): whether it ended. If not, it fails its jobs and ends once its decode returns."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self.thread.join(CLOSE_TIMEOUT)
        if self.thread.is_alive():
            log.error("the scheduler of model %s did not stop within %s s: left to end when its decode returns", self.model_id, CLOSE_TIMEOUT)
            return False
        return True

    def failure(self) -> ServerError:
        """The error of the jobs of a failed scheduler (and of its model's state)."""
        return ServerError(f"The scheduler of model '{self.model_id}' failed; the next request to it starts it again.", code="scheduler_failed")

    def _drop_cancelled(self) -> None:
        """Forget waiting groups whose clients have gone, so they do not hold places in the queue."""
        for group in [group for group in self._waiting if all(job.cancelled.is_set() for job in group)]:
            self._waiting.remove(group)
            for job in group:
                self.cancelled_requests += 1
                job.events.put(("done", None))

    def _run(self) -> None:
        if sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS with a thread id would renice the process
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICE)
        try:
            self._loop()
        except BaseException:
            log.critical("the scheduler of model %s died", self.model_id, exc_info=True)
            self._end(self.failure(), failed=True)
            raise
        self._end(UnavailableError(f"Model '{self.model_id}' is stopping.", code="model_stopping"), failed=False)

    def _loop(self) -> None:
        while True:
            with self._ready:
                idle = None
                while not self._live and not self._waiting and not self._preempted and not self._stopping:
                    if (idle := self._unoffered()) is not None:
                        break
                    self._ready.wait()
                if self._stopping:
                    return
                while not self._preempted and self._waiting and len(self._free) >= len(self._waiting[0]):
                    self._admit(self._waiting.popleft())
            if idle is not None:  # nothing else to do: save a slot's cells before a job needs them gone (room)
                self._offer(*idle)
                continue
            try:
                self._resume_preempted()
                self._step()
            except Exception as exc:  # a fault of the scheduler itself: fail the live sequences, serve the next jobs
                log.exception("generation failed on model %s", self.model_id)
                for sequence in list(self._live):
                    self._fail(sequence, exc)

    def _end(self, error: ApiError, failed: bool) -> None:
        """Fail every waiting and live job with `error`; with `failed`, refuse later submits with a 500."""
        with self._ready:
            self._stopping = True
            self._failed = failed
            waiting, self._waiting = [job for group in self._waiting for job in group], collections.deque()
        for job in waiting:
            job.events.put(("error", error))
        for sequence in [*self._live, *self._preempted]:
            self._release(sequence, cache=False)
            sequence.job.events.put(("error", error))

    def _retire(self, sequence: Sequence, finish: str | None) -> None:
        """Free the slot (its prompt's cells and logits stay as a cache); tell the job how it ended."""
        self._release(sequence, cache=True)
        events = sequence.job.events
        if finish is None:
            with self._ready:  # a request thread counts the waiting jobs it drops (_drop_cancelled) under this lock
                self.cancelled_requests += 1
        else:
            self.completed_requests += 1
            tail = sequence.stops.flush() + sequence.decoder.decode(b"", final=True)
            if tail:
                events.put(("delta", tail))
        events.put(("done", finish))
        for follower in self._orphans(sequence):
            self._retire(follower, None)

    def _fail(self, sequence: Sequence, exc: Exception) -> None:
        """End one sequence with a 500 `generation_failed`; its slot keeps no cache."""
        log.warning("generation failed on model %s: %s", self.model_id, exc)
        self._release(sequence, cache=False)
        sequence.job.events.put(("error", ServerError(f"Generation failed: {exc}", code="generation_failed")))
        for follower in self._orphans(sequence):
            self._fail(follower, exc)
