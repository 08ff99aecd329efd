"""What the scheduler needs of an inference engine (jan_server.models.llama_backend implements it; the unit tests
use a fake one), and the size of a step's batch, which the backend sizes its own batch with too."""

from __future__ import annotations

from typing import Protocol

from jan_server.models.jobs import Sampling, TokenLogprob

#: One row of a decode: (sequence id, position of its first token, tokens, whether to keep logits after the last).
Row = tuple[int, int, list[int], bool]


def batch_size(n_batch: int, n_slots: int, min_chunk: int) -> int:
    """The tokens of one step's batch: `n_batch`, raised to a token of every slot and two chunks of `min_chunk`.
    With less, a prompt's rest longer than the room but shorter than two chunks could be read neither whole nor
    in chunks of `min_chunk`: the step would read nothing, for ever."""
    return max(n_batch, n_slots + 2 * min_chunk)


class Backend(Protocol):
    """An inference engine's context of `n_slots` sequences. Samplers are the backend's own objects."""

    def make_sampler(self, sampling: Sampling) -> object: ...

    def free_sampler(self, sampler: object) -> None: ...

    def clear(self, seq_id: int, start: int) -> None:
        """Forget the sequence's cells from position `start` on."""

    def copy(self, source: int, target: int) -> None:
        """Make the target sequence's cells a copy of all the source's (before the next decode runs)."""

    def save(self, seq_id: int) -> bytes | memoryview:
        """The sequence's cells (bytes-like), to restore later into any sequence of a context like this one."""

    def restore(self, seq_id: int, state: bytes | memoryview) -> None:
        """Make the sequence's cells those `save` gave (before the next decode runs)."""

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
