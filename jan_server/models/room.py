"""Room in a unified KV cache, whose cells all slots share (jan_server.models.kv): idle slots' cells give way
first, then, if generating sequences still lack cells, the newest sequences are preempted.

Before a step decodes, every generating sequence gets a cell for its token and each prompt chunk only as many
tokens as there are cells for: idle slots (free, but holding a conversation) have their cells saved to the
host prompt cache and cleared, least recently freed first (`_make_room`). If the generating sequences still
lack cells, or no sequence can read or generate at all, the newest sequence holding cells is preempted
(`_preempt`): its cells go to the prompt cache, the slot is freed, and it waits, with its sampler, decoded text
and pending token, ahead of every new job. It resumes (`_resume`) once its tokens fit again: restored from the
prompt cache where an entry holds them, the rest read again, and it then goes on exactly where it stopped (its
last token's logits are computed anew, so its text is what it would have been). A prompt that cannot fit even
alone never gets here: it is a 400 `context_length_exceeded` when it is prepared.

Idle slots do not wait to be needed, though: as a job is seated, every idle slot's cells go to the prompt cache
(`_vacate`) before the job's restored cells and its reads take the lowest free cells. In a unified cache every
token read or decoded attends over all cells up to the highest one in use, whoever holds them: beside 7 idle
slots of 1,500 cells, reading 1,900 tokens took 1.65x as long, and each token after 1.6x; the highest slot alone
costs as much (docs/BENCHMARKS.md). Saving 2,400 tokens' cells takes 6-27 ms, restoring them 3 ms, so the
next turn of a conversation whose slot was vacated pays that instead. Without a prompt cache to keep them, idle
slots keep their cells until the room is needed. With per-slot cells (a deterministic model: `backend.cells` is
None) none of this applies.

The saving need not wait for a job, either (per-slot cells too): a scheduler with nothing to do offers its idle
slots' cells to the prompt cache one slot at a time (`_offer`), keeping them in the slot, so that a job seated
later only clears them where it would have saved them first (out of its time to first token and every live
sequence's step). A job that arrives meanwhile waits for at most one slot's save.

`Room` is a part of the Scheduler (a mixin), run by its thread only.
"""

from __future__ import annotations

import logging

from jan_server.models.seating import Sequence
from jan_server.models.slots import COPY_GAIN, SlotCache

log = logging.getLogger(__name__)
HEADROOM = 64  # cells beyond its tokens that a preempted sequence waits for, so it does not give way again at once


class Room:
    """Making room in the shared cells: evicting idle slots, preempting and resuming sequences."""

    def _make_room(self, wanted: int) -> int:
        """The free cells, after clearing idle slots (their cells saved to the prompt cache), least recently freed
        first, until `wanted` are free."""
        cells = self.backend.cells
        for seq_id, cache in self._free.items():
            if cells.free >= wanted:
                break
            if cells.own(seq_id):
                self._evict(seq_id, cache)
        return cells.free

    def _vacate(self) -> None:
        """Clear every idle slot's cells (saved to the prompt cache) as a job is seated, unless no cache would keep
        them: see the module's docstring."""
        if self.backend.cells is not None and self.cache.enabled:
            for seq_id, cache in self._free.items():
                if self.backend.cells.held(seq_id):
                    self._evict(seq_id, cache)

    def _unoffered(self) -> tuple[int, SlotCache] | None:
        """An idle slot whose cells have not been offered to the prompt cache yet (see the module's docstring)."""
        if not self.cache.enabled:
            return None
        return next(((seq_id, cache) for seq_id, cache in self._free.items() if not cache.offered and len(cache.tokens) >= COPY_GAIN), None)

    def _offer(self, seq_id: int, cache: SlotCache) -> None:
        """Save an idle slot's cells to the prompt cache, keeping them in the slot; once, whether or not it works."""
        cache.offered = True
        self._keep_evicted(seq_id, cache, 0)

    def _evict(self, seq_id: int, cache: SlotCache) -> None:
        """Save an idle slot's cells to the prompt cache and clear them."""
        self._keep_evicted(seq_id, cache, 0)
        self.backend.clear(seq_id, 0)
        self._free.put(seq_id, SlotCache())

    def _fit_generating(self) -> None:
        """A cell for every generating sequence's next token, preempting the newest sequences if need be."""
        needed = sum(1 for sequence in self._live if sequence.next_token is not None)
        while self._make_room(needed) < needed and (victim := self._victim()) is not None:
            needed -= victim.next_token is not None
            self._preempt(victim)

    def _victim(self) -> Sequence | None:
        """The newest live sequence holding cells whose group has no one waiting for its prompt."""
        held = [sequence for sequence in self._live if sequence.cached and not sequence.followers]
        return max(held, key=lambda sequence: sequence.order, default=None)

    def _preempt(self, sequence: Sequence) -> None:
        """Save the sequence's cells to the prompt cache, free its slot and queue it to resume (see the module)."""
        read = sequence.prompt_logits is not None
        self._keep_evicted(sequence.seq_id, SlotCache(sequence.cached, sequence.prompt_logits, len(sequence.job.prompt_tokens) if read else 0, sequence.exact), 0)
        self._live.remove(sequence)
        self.backend.clear(sequence.seq_id, 0)
        self._free.put(sequence.seq_id, SlotCache())
        pending = [sequence.next_token] if sequence.next_token is not None else []
        sequence.unread = sequence.cached + pending + sequence.unread
        sequence.cached, sequence.position, sequence.next_token = [], 0, None
        self._preempted.append(sequence)
        self.preempted_sequences += 1

    def _resume_preempted(self) -> None:
        """Resume the preempted sequences, oldest first, while each has a free slot and room."""
        while self._preempted and len(self._free):
            sequence = self._preempted[0]
            if sequence.job.cancelled.is_set():
                self._retire(self._preempted.popleft(), None)
                continue
            wanted = min(len(sequence.unread) + HEADROOM, self.backend.cells.size)
            if self._make_room(wanted) < wanted and self._live:
                return
            self._resume(self._preempted.popleft())

    def _resume(self, sequence: Sequence) -> None:
        """Seat a preempted sequence: its tokens' cells from a slot or the prompt cache, the rest (at least its last
        token, whose logits give its next one) to read."""
        tokens = sequence.unread
        busy = {live.seq_id for live in self._live}
        seq_id, cache, shared = self._free.take(tokens, False, busy)
        entry, stored = self.cache.best(self.cache_key, tokens, False, beyond=shared + COPY_GAIN) if self.cache.enabled else (None, 0)
        sequence.seq_id = seq_id
        self._live.append(sequence)
        try:
            if entry is not None and stored >= shared + COPY_GAIN:
                self._keep_evicted(seq_id, cache, 0)
                shared = self._restore(seq_id, entry, stored)[1]
                self.restored_prompt_tokens += min(shared, len(tokens) - 1)
            else:
                self._keep_evicted(seq_id, cache, min(shared, len(tokens) - 1))
            kept = min(shared, len(tokens) - 1)
            self.backend.clear(seq_id, kept)
            sequence.cached, sequence.position, sequence.unread = tokens[:kept], kept, tokens[kept:]
        except Exception as exc:
            self._fail(sequence, exc)
