"""Continuous batching in pure Python: one thread per running model decodes every live sequence together.

The scheduler has `n_slots` slots (sequence ids of one backend context). Every step it admits waiting jobs (FIFO)
into free slots, plans one batch holding the next token of every generating sequence plus a chunk of any prompt
still being read (as much as the room left in the batch allows), decodes it once, samples each sequence with its
own sampler (own seed, penalties, grammar), hands the text to the job's event queue and retires finished or
cancelled sequences, freeing their slots at once. A free slot keeps its cells and its prompt's last logits: a job
is seated in the slot sharing the longest prefix with its prompt and reads only the rest (see
jan_server.models.slots, also for why a seeded job reuses only the cells read as a prompt); a job with exactly
the cached prompt samples its first token from the kept logits. Another slot holding more of the prompt, free or
busy, has its cells copied into the chosen one first. If the whole prompt is cached but not those logits, its last
two tokens (a seeded job's last `min_chunk`) are read again for them. No prompt chunk is shorter than the
backend's `min_chunk` (unless the rest of the prompt is): llama.cpp computes the cells of a lone token (with
flash attention, of a chunk under 64 tokens) differently from those of longer chunks, which all agree, so a
seed's text never depends on how its prompt was split. A seeded job also keeps the last `min_chunk` tokens of its
prompt to read, and a slot's cells read in a shorter chunk are not counted exact. The batch holds at least a token
of every slot and two such chunks (`batch_size`), so however many slots generate, the first sequence reading a
prompt reads in every step: the rest of its prompt whole, or a chunk of `min_chunk` or more that leaves as many.

A group of jobs (the `n` choices of one request, `submit_group`) waits until it has a slot for each. The first
job reads the prompt; the moment it is read, its cells are copied to the others' slots, and every job samples
its first token from the same logits with its own sampler, then generates on its own.

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

The scheduler imports nothing of llama.cpp: it drives a `Backend` (jan_server.models.llama_backend implements it;
the unit tests use a fake one). The module is over 300 lines for the reason the Scheduler class gives; the slot
choice, which needs none of its state, lives in jan_server.models.slots.
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import sys
import threading
from typing import Protocol

from jan_server.errors import ApiError, ConflictError, RateLimitError, ServerError, UnavailableError
from jan_server.models.jobs import Job, Sampling, TokenLogprob
from jan_server.models.slots import COPY_GAIN, FreeSlots, SlotCache
from jan_server.models.stops import StopMatcher

log = logging.getLogger(__name__)
DECODE_NICE = 5
CLOSE_TIMEOUT = 60.0  # seconds close() waits for the decode under way: far longer than a step takes

#: One row of a decode: (sequence id, position of its first token, tokens, whether to keep logits after the last).
Row = tuple[int, int, list[int], bool]


def batch_size(n_batch: int, n_slots: int, min_chunk: int) -> int:
    """The tokens of one step's batch: `n_batch`, raised to a token of every slot and two chunks of `min_chunk`.
    With less, a prompt's rest longer than the room but shorter than two chunks could be read neither whole nor
    in chunks of `min_chunk`: the step would read nothing, for ever (the backend sizes its batch with this too)."""
    return max(n_batch, n_slots + 2 * min_chunk)


class Backend(Protocol):
    """What the scheduler needs of an inference engine. Samplers are the backend's own objects."""

    def make_sampler(self, sampling: Sampling) -> object: ...

    def free_sampler(self, sampler: object) -> None: ...

    def clear(self, seq_id: int, start: int) -> None:
        """Forget the sequence's cells from position `start` on."""

    def copy(self, source: int, target: int) -> None:
        """Make the target sequence's cells a copy of all the source's (before the next decode runs)."""

    #: The fewest tokens of a prompt chunk whose cells are the same however the prompt is split.
    min_chunk: int

    def decode(self, rows: list[Row], exact: set[int]) -> None:
        """Decode one batch, the rows' tokens in order; the results of the sequences in `exact` must not depend
        on the other rows."""

    def logits(self, row: int) -> object:
        """A copy of the logits kept for a row of the last decode."""

    def sample(self, sampler: object, row: int) -> int:
        """Sample (and accept) a sequence's next token from a row of the last decode."""

    def sample_cached(self, sampler: object, logits: object) -> int:
        """The same from logits copied earlier with `logits`."""

    def logprobs(self, logits: object, token: int, top: int) -> TokenLogprob:
        """The token's log-softmax over logits copied with `logits`, and the `top` most likely tokens'."""

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


class Sequence:
    """A job in a slot: its sequence id, sampler, unread prompt, decoded tokens and text state."""

    def __init__(self, job: Job, seq_id: int, sampler: object):
        self.job = job
        self.seq_id = seq_id
        self.sampler = sampler
        self.unread: list[int] = []  # prompt tokens not decoded yet
        self.cached: list[int] = []  # the tokens whose cells the slot holds, from position 0: prompt, then answer
        self.exact = 0  # how many of the cells, from position 0, are (or will be, once read) as a cold read's
        self.position = 0  # next cell position
        self.next_token: int | None = None  # sampled, to be decoded in the next step
        self.prompt_logits = None  # the logits after the whole prompt, kept with the slot as a prompt cache
        self.followers: list[Sequence] = []  # the other jobs of its group, waiting for its prompt to be read
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopMatcher(job.sampling.stop)


class Scheduler:
    """The FIFO of waiting jobs, the slots and the thread that batches them on one backend.

    Over 200 lines on purpose: admission, step planning, retiring and failing share the slot and queue state that
    only the scheduler thread (and, under the condition, submit and close) may touch; split into classes, that
    state would have to be passed around or locked more."""

    def __init__(self, backend: Backend, *, model_id: str, n_slots: int, n_batch: int, max_queued: int):
        self.backend = backend
        self.model_id = model_id
        self.n_batch = batch_size(n_batch, n_slots, backend.min_chunk)
        self.max_queued = max_queued
        self._waiting: collections.deque[list[Job]] = collections.deque()  # groups of jobs
        self._ready = threading.Condition()  # guards _waiting, _stopping, _failed, cancelled_requests
        self._live: list[Sequence] = []
        self._free = FreeSlots(n_slots)
        self._stopping = False
        self._failed = False
        self.generated_tokens = 0
        self.prompt_tokens_read = 0  # prompt tokens decoded
        self.cached_prompt_tokens = 0  # prompt tokens found in a slot's cells, not decoded
        self.completed_requests = 0
        self.cancelled_requests = 0
        self.thread = threading.Thread(target=self._run, name=f"model:{model_id}", daemon=True)
        self.thread.start()

    def stats(self) -> dict:
        return {
            "generated_tokens": self.generated_tokens,
            "prompt_tokens_read": self.prompt_tokens_read,
            "cached_prompt_tokens": self.cached_prompt_tokens,
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
                while not self._live and not self._waiting and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                while self._waiting and len(self._free) >= len(self._waiting[0]):
                    self._admit(self._waiting.popleft())
            try:
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
        for sequence in list(self._live):
            self._release(sequence, cache=False)
            sequence.job.events.put(("error", error))

    def _admit(self, group: list[Job]) -> None:
        """Seat a group: its first job where the cache serves its prompt best, the others in any free slots."""
        live = [job for job in group if not job.cancelled.is_set()]
        for job in group:
            if job not in live:
                self.cancelled_requests += 1
                job.events.put(("done", None))
        if not live:
            return
        samplers = []
        try:
            for job in live:
                samplers.append(self.backend.make_sampler(job.sampling))
        except Exception as exc:
            log.warning("bad sampling parameters on model %s: %s", self.model_id, exc)
            for sampler in samplers:
                self.backend.free_sampler(sampler)
            for job in live:
                job.events.put(("error", ServerError(f"Generation failed: {exc}", code="generation_failed")))
            return
        prompt, exact = live[0].prompt_tokens, live[0].seeded
        busy = {sequence.seq_id for sequence in self._live}
        seq_id, cache, shared = self._free.take(prompt, exact, busy)
        leader = Sequence(live[0], seq_id, samplers[0])
        source, held, source_exact = self._holding(prompt, exact)
        busy.add(seq_id)
        for job, sampler in zip(live[1:], samplers[1:]):
            leader.followers.append(Sequence(job, self._free.take_any(busy)[0], sampler))
            busy.add(leader.followers[-1].seq_id)
        self._live += [leader, *leader.followers]
        try:
            if self._keepable(live[0], held) >= self._keepable(live[0], shared) + COPY_GAIN:
                self.backend.copy(source, seq_id)
                cache, shared = SlotCache(exact=source_exact), held
            self._seat(leader, cache, shared)
        except Exception as exc:
            self._fail(leader, exc)

    def _holding(self, prompt: list[int], exact: bool) -> tuple[int | None, int, int]:
        """The slot, free or busy, whose cells hold the longest start of `prompt` (with `exact`, of its exact cells),
        how many tokens, and its count of exact cells."""
        busy = ((sequence.seq_id, SlotCache(sequence.cached, exact=sequence.exact).share(prompt, exact), sequence.exact) for sequence in self._live)
        return max([self._free.holding(prompt, exact), *busy], key=lambda share: share[1])

    def _seat(self, sequence: Sequence, cache: SlotCache, shared: int) -> None:
        """Keep the slot's cells of the prompt's first `shared` tokens and read the rest; if the slot has this very
        prompt and its logits, sample the first token from them."""
        prompt = sequence.job.prompt_tokens
        if shared == len(prompt) == cache.logits_at and cache.logits is not None:
            self.backend.clear(sequence.seq_id, shared)  # drop the last answer, keep the prompt
            sequence.cached, sequence.position, sequence.prompt_logits = list(prompt), shared, cache.logits
            sequence.exact = min(shared, cache.exact)
            sequence.job.cached_tokens = shared
            self.cached_prompt_tokens += shared
            self._fork(sequence, lambda follower: self.backend.sample_cached(follower.sampler, cache.logits))
            self._take(sequence, self.backend.sample_cached(sequence.sampler, cache.logits), cache.logits)
            return
        kept = self._keepable(sequence.job, shared)
        self.backend.clear(sequence.seq_id, kept)
        sequence.cached, sequence.position, sequence.unread = prompt[:kept], kept, prompt[kept:]
        sequence.exact = len(prompt) if kept <= cache.exact else cache.exact  # read after an inexact cell: inexact
        sequence.job.cached_tokens = kept
        self.cached_prompt_tokens += kept

    def _keepable(self, job: Job, shared: int) -> int:
        """How many of `shared` cached prompt tokens a job keeps: all but a last chunk to read, whose last token's
        logits give the first token (for a seeded job, a chunk whose cells are a cold read's)."""
        return max(0, min(shared, len(job.prompt_tokens) - (self.backend.min_chunk if job.seeded else 2)))

    def _fork(self, leader: Sequence, sample) -> None:
        """The prompt of a group's first job is read: copy its cells to the other jobs' slots; each samples its
        first token with `sample(sequence)` from the same logits."""
        followers, leader.followers = leader.followers, []
        for follower in [follower for follower in followers if follower in self._live]:  # not cancelled meanwhile
            try:
                self.backend.copy(leader.seq_id, follower.seq_id)
                follower.cached, follower.position, follower.prompt_logits = list(leader.cached), leader.position, leader.prompt_logits
                follower.exact, follower.job.cached_tokens = leader.exact, leader.job.cached_tokens
                self._take(follower, sample(follower), leader.prompt_logits)
            except Exception as exc:
                self._fail(follower, exc)

    def _step(self) -> None:
        """One decode: every generating sequence's next token, then prompt chunks with what room is left."""
        for sequence in [s for s in self._live if s.job.cancelled.is_set()]:
            self._retire(sequence, None)
        rows: list[Row] = []
        read: list[tuple[Sequence, list[int]]] = []  # the prompt chunks of the batch
        sampling: list[tuple[int, Sequence]] = []  # (row, sequence) of the rows whose logits are sampled
        count = 0
        for sequence in self._live:
            if sequence.next_token is not None:
                sampling.append((len(rows), sequence))
                rows.append((sequence.seq_id, sequence.position, [sequence.next_token], True))
                sequence.position += 1
                sequence.next_token = None
                count += 1
        generating = count  # the first rows: one generated token each
        for sequence in self._live:
            room = self.n_batch - count
            if room == 0:
                break
            if not sequence.unread:
                continue
            size = min(room, len(sequence.unread))
            if size < len(sequence.unread):  # never leave a chunk shorter than min_chunk
                size = min(size, len(sequence.unread) - self.backend.min_chunk)
                if size < self.backend.min_chunk:
                    continue
            elif size < self.backend.min_chunk:  # the prompt's rest is short: its cells are not a cold read's
                sequence.exact = min(sequence.exact, sequence.position)
            chunk, sequence.unread = sequence.unread[:size], sequence.unread[size:]
            if not sequence.unread:
                sampling.append((len(rows), sequence))
            rows.append((sequence.seq_id, sequence.position, chunk, not sequence.unread))
            read.append((sequence, chunk))
            sequence.position += len(chunk)
            count += len(chunk)
        if not rows:
            return
        try:
            self.backend.decode(rows, {s.seq_id for s in self._live if s.job.seeded})
        except Exception as exc:  # the cells of every sequence in the batch are in doubt
            log.exception("decode failed on model %s", self.model_id)
            in_batch = {row[0] for row in rows}
            for sequence in [s for s in self._live if s.seq_id in in_batch]:
                self._fail(sequence, exc)
            return
        for row, sequence in sampling[:generating]:  # the answer's cells are kept too
            sequence.cached += rows[row][2]
        for sequence, chunk in read:
            sequence.cached += chunk
            self.prompt_tokens_read += len(chunk)
        if self._stopping:  # close() waits for this step: skip its sampling (a grammar's can take longer than the decode)
            return
        for row, sequence in sampling:
            try:
                logits = None
                if sequence.prompt_logits is None:
                    sequence.prompt_logits = logits = self.backend.logits(row)
                    self._fork(sequence, lambda follower: self.backend.sample(follower.sampler, row))
                elif sequence.job.sampling.logprobs is not None:
                    logits = self.backend.logits(row)
                self._take(sequence, self.backend.sample(sequence.sampler, row), logits)
            except Exception as exc:
                self._fail(sequence, exc)

    def _take(self, sequence: Sequence, token: int, logits: object = None) -> None:
        """Deliver one sampled token's text (and its logprobs, when the job asks, from the `logits` it was sampled
        from), or finish the sequence (end of generation, stop string, length)."""
        job = sequence.job
        if job.cancelled.is_set():
            return self._retire(sequence, None)
        if self.backend.is_eog(token):
            return self._retire(sequence, "stop")
        if job.sampling.logprobs is not None:
            job.events.put(("logprob", self.backend.logprobs(logits, token, job.sampling.logprobs)))
        job.completion_tokens += 1
        self.generated_tokens += 1
        job.on_token()
        text, stopped = sequence.stops.feed(sequence.decoder.decode(self.backend.piece(token)))
        if text:
            job.events.put(("delta", text))
        if stopped:
            return self._retire(sequence, "stop")
        if job.completion_tokens >= job.sampling.max_tokens:
            return self._retire(sequence, "length")
        sequence.next_token = token

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

    def _orphans(self, leader: Sequence) -> list[Sequence]:
        """The group members still waiting for the prompt of a job that ended before reading it: they end too."""
        followers, leader.followers = leader.followers, []
        return [follower for follower in followers if follower in self._live]

    def _release(self, sequence: Sequence, cache: bool) -> None:
        """Take the sequence out of its slot (with `cache`, the slot keeps its cells as a cache) and free its sampler
        (once, whatever fails)."""
        if sequence in self._live:
            self._live.remove(sequence)
            kept = SlotCache(sequence.cached, sequence.prompt_logits, len(sequence.job.prompt_tokens), sequence.exact) if cache else SlotCache()
            self._free.put(sequence.seq_id, kept)
        sampler, sequence.sampler = sequence.sampler, None
        if sampler is not None:
            try:
                self.backend.free_sampler(sampler)
            except Exception:
                log.exception("could not free a sampler on model %s", self.model_id)
