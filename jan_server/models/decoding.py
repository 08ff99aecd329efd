"""The decode loop's step: one batch holding the next token of every generating sequence plus a chunk of any
prompt still being read (as much as the room left in the batch allows), decoded once; then each sequence is
sampled with its own sampler (own seed, penalties, grammar) and its text handed to its job, or it is retired.

No prompt chunk is shorter than the backend's `min_chunk` (unless the rest of the prompt is): llama.cpp computes
the cells of a lone token (with flash attention, of a chunk under 64 tokens) differently from those of longer
chunks, which all agree, so a seed's text never depends on how its prompt was split. A seeded job also keeps the
last `min_chunk` tokens of its prompt to read, and a slot's cells read in a shorter chunk are not counted exact.
The batch holds at least a token of every slot and two such chunks (jan_server.models.backend.batch_size), so
however many slots generate, the first sequence reading a prompt reads in every step: the rest of its prompt
whole, or a chunk of `min_chunk` or more that leaves as many.

`Decoding` is a part of the Scheduler (a mixin), run by its thread only.
"""

from __future__ import annotations

import logging

from jan_server.models.backend import Row
from jan_server.models.seating import Sequence

log = logging.getLogger(__name__)


class Decoding:
    """One step of the decode loop, and the delivery of each sampled token."""

    def _step(self) -> None:
        """One decode: every generating sequence's next token, then prompt chunks with what room is left."""
        for sequence in [s for s in self._live if s.job.cancelled.is_set()]:
            self._retire(sequence, None)
        cells = self.backend.cells  # shared (unified), or None: each slot has its own
        if cells is not None:
            self._fit_generating()
        rows: list[Row] = []
        read: list[tuple[Sequence, list[int]]] = []  # the prompt chunks of the batch
        sampling: list[tuple[int, Sequence]] = []  # (row, sequence) of the rows whose logits are sampled
        for sequence in self._live:
            if sequence.next_token is not None:
                sampling.append((len(rows), sequence))
                rows.append((sequence.seq_id, sequence.position, [sequence.next_token], True))
                sequence.position += 1
                sequence.next_token = None
        generating = count = len(rows)  # the first rows: one generated token each
        for sequence in self._live:
            if not sequence.unread:
                continue
            room = self.n_batch - count
            if cells is not None:  # as many tokens as there are (or can be made) free cells
                room = min(room, self._make_room(count + min(room, len(sequence.unread))) - count)
            if room <= 0:
                break
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
            victim = self._victim() if cells is not None and any(s.unread for s in self._live) else None
            if victim is not None and sum(1 for s in self._live if cells.held(s.seq_id)) > 1:
                self._preempt(victim)  # readers stuck on each other's cells: the newest gives way
            return
        try:
            self.backend.decode(rows, {s.seq_id for s in self._live if s.job.exact})
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
            job.stop_sequence = sequence.stops.matched
            return self._retire(sequence, "stop")
        if job.completion_tokens >= job.sampling.max_tokens:
            return self._retire(sequence, "length")
        sequence.next_token = token
