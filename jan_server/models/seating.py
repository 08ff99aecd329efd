"""Seating jobs in slots: a group's first job goes where the cache serves its prompt best (jan_server.models.slots
chooses the free slot), keeps the cells it shares and reads only the rest.

A job with exactly the cached prompt samples its first token from the kept logits. Another slot holding more of
the prompt, free or busy, has its cells copied into the chosen one first. If the whole prompt is cached but not
those logits, its last two tokens (a seeded job's last `min_chunk`) are read again for them: no prompt chunk is
shorter than the backend's `min_chunk` (jan_server.models.decoding says why).

A group of jobs (the `n` choices of one request) waits until it has a slot for each. The first job reads the
prompt; the moment it is read, its cells are copied to the others' slots, and every job samples its first token
from the same logits with its own sampler, then generates on its own.

`Seating` is a part of the Scheduler (a mixin): it shares the scheduler thread's state (`_live`, `_free`, the
counters), which only that thread touches.
"""

from __future__ import annotations

import codecs
import logging

from jan_server.errors import ServerError
from jan_server.models.jobs import Job
from jan_server.models.slots import COPY_GAIN, SlotCache
from jan_server.models.stops import StopMatcher

log = logging.getLogger(__name__)


class Sequence:
    """A job in a slot: its sequence id, sampler, unread prompt, decoded tokens and text state."""

    def __init__(self, job: Job, seq_id: int, sampler: object, order: int = 0):
        self.job = job
        self.order = order  # when it was admitted: the newest gives way first (jan_server.models.room)
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


class Seating:
    """Admission into slots, seating on a cached prefix, sharing a group's prompt, and freeing slots."""

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
        prompt, exact = live[0].prompt_tokens, live[0].exact
        busy = {sequence.seq_id for sequence in self._live}
        seq_id, cache, shared = self._free.take(prompt, exact, busy, live[0].route)
        self.admitted += 1
        leader = Sequence(live[0], seq_id, samplers[0], self.admitted)
        source, held, source_exact = self._holding(prompt, exact)
        entry, stored = self.cache.best(self.cache_key, prompt, exact, beyond=max(shared, held) + COPY_GAIN) if self.cache.enabled else (None, 0)
        busy.add(seq_id)
        for job, sampler in zip(live[1:], samplers[1:]):
            followed = self._free.take_any(busy)
            self._keep_evicted(followed[0], followed[1], 0)
            if self.backend.cells is not None:  # shared cells: until the leader's are copied, these only take room
                self.backend.clear(followed[0], 0)
            leader.followers.append(Sequence(job, followed[0], sampler, self.admitted))
            busy.add(leader.followers[-1].seq_id)
        self._live += [leader, *leader.followers]
        keeps = {"slot": self._keepable(live[0], shared), "copy": self._keepable(live[0], held), "restore": self._keepable(live[0], stored)}
        # on a tie, a copy in a unified cache (it moves nothing), else a restore (a copy moves a whole per-slot buffer)
        choice = max(("copy", "restore") if self.backend.cells is not None else ("restore", "copy"), key=keeps.get)
        choice = choice if keeps[choice] >= keeps["slot"] + COPY_GAIN else "slot"
        try:
            self._keep_evicted(seq_id, cache, keeps["slot"] if choice == "slot" else 0)
            if choice == "copy":  # shares the source's cells: before they are vacated
                self.backend.copy(source, seq_id)
                cache, shared = SlotCache(exact=source_exact), held
            self._vacate()
            if choice == "restore":
                cache, shared = self._restore(seq_id, entry, stored)
                self.restored_prompt_tokens += min(keeps["restore"], shared)
            self._seat(leader, cache, shared)
        except Exception as exc:
            self._fail(leader, exc)

    def _restore(self, seq_id: int, entry, shared: int) -> tuple[SlotCache, int]:
        """Restore a cache entry's cells into the slot: what it then holds, and how much of the prompt. An entry
        llama.cpp refuses (from another build of it, say) is dropped, and the prompt read instead; so is one the
        shared cells have no room for (kept)."""
        needed = len(entry.cells.tokens)
        if self.backend.cells is not None and self._make_room(needed) < needed:
            return SlotCache(), 0
        try:
            self.backend.restore(seq_id, entry.state)
            return entry.cells, shared
        except Exception:
            log.exception("could not restore cached cells on model %s; reading the prompt instead", self.model_id)
            self.cache.forget(entry)
            return SlotCache(), 0

    def keep_slots(self) -> None:
        """Save the free slots' cells to the prompt cache (the model is stopping: they would be lost). Only once
        the scheduler thread has ended."""
        for seq_id, cache in self._free.items():
            self._keep_evicted(seq_id, cache, 0)

    def _keep_evicted(self, seq_id: int, cache: SlotCache, kept: int) -> None:
        """Save a slot's cells to the host cache (jan_server.models.prompt_cache) before all but the first `kept`
        are lost, if that loses `COPY_GAIN` tokens or more that no entry holds yet. A failure only loses them."""
        if len(cache.tokens) - kept < COPY_GAIN or not self.cache.wants(self.cache_key, cache):
            return
        try:
            self.cache.put(self.cache_key, cache, self.backend.save(seq_id))
        except Exception:
            log.exception("could not save the cells of a slot of model %s", self.model_id)

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
        return max(0, min(shared, len(job.prompt_tokens) - (self.backend.min_chunk if job.exact else 2)))

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

    def _orphans(self, leader: Sequence) -> list[Sequence]:
        """The group members still waiting for the prompt of a job that ended before reading it: they end too."""
        followers, leader.followers = leader.followers, []
        return [follower for follower in followers if follower in self._live]

    def _release(self, sequence: Sequence, cache: bool) -> None:
        """Take the sequence out of its slot (with `cache`, the slot keeps its cells as a cache) and free its sampler
        (once, whatever fails)."""
        if sequence in self._live:
            self._live.remove(sequence)
            kept = SlotCache(sequence.cached, sequence.prompt_logits, len(sequence.job.prompt_tokens), sequence.exact, sequence.job.label) if cache else SlotCache()
            self._free.put(sequence.seq_id, kept)
        sampler, sequence.sampler = sequence.sampler, None
        if sampler is not None:
            try:
                self.backend.free_sampler(sampler)
            except Exception:
                log.exception("could not free a sampler on model %s", self.model_id)
