"""The free slots of a scheduler and what each still holds, so a new job is seated where most of its prompt is
already decoded.

A slot that served a job keeps its cells: its prompt's, and its answer's. The next turn of a conversation resends
that prompt, then the answer and the new message, so seating it in that slot leaves only the new message to read.
A job that gives a `seed` reuses only the cells that were read as a prompt, though: llama.cpp computes the cells of
a token decoded alone (as every generated token is) slightly differently from the same token read within a prompt
(we measured logits up to 0.6 apart on SmolLM2), and a seed promises the same text with or without a cache. So a
slot counts how many of its leading cells are `exact` (read as prompt chunks of the backend's `min_chunk` or
more, which all agree, after nothing but exact cells); a seeded job takes only those, and reads the answer again.
A job without a seed takes every cell that matches, as llama-server does: its text may differ from a cold read's
where two tokens are nearly tied. A slot also keeps the logits after its prompt's final token: a job with exactly
that prompt (a retry, a regenerate) samples its first token from them, reading nothing.

As in llama-server, a slot is chosen for its prefix only if that covers more than `SIMILARITY` of the prompt,
else the least recently used one is (of those next to a busy slot, if any: see `FreeSlots._beside`); unlike it,
a slot that would lose more than half of its last prompt is passed over for an empty one, so another client's
conversation is not evicted for a shared system prompt (a regenerate or a next turn keeps all of its last prompt,
and stays).

A prompt that is all in a slot's cells without those logits (a shorter one) reads its last token again: that
token's logits are the first token's distribution.

Another slot, free or busy, may hold more of the prompt than the slot chosen (a system prompt or a document
that many requests share, arriving together): if it holds at least `COPY_GAIN` more tokens, its cells are copied
into the chosen slot (jan_server.models.seating), with their count of exact cells, so a seed's text stays the
same.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

SIMILARITY = 0.1  # llama-server's default --slot-prompt-similarity
#: A copy between slots shares the cells of a unified cache, and moves the whole per-slot buffer of a deterministic
#: model's (about 190 MB for SmolLM2 at 8,192 cells: tens of milliseconds); reading this many tokens costs more.
COPY_GAIN = 16


@dataclass
class SlotCache:
    """What a free slot holds: `tokens` are those whose cells are in the slot, from position 0 (its last prompt, or
    what of it was read, then the answer's decoded tokens), the first `exact` of them read as a prompt; `logits`
    (or None) are the logits after `tokens[:logits_at]`."""

    tokens: list[int] = field(default_factory=list)
    logits: object = None
    logits_at: int = 0
    exact: int = 0

    def share(self, prompt: list[int], exact: bool) -> int:
        """How many leading tokens of `prompt` the cells hold (with `exact`, of the cells read as a prompt)."""
        shared = common_prefix(self.tokens, prompt)
        return min(shared, self.exact) if exact else shared


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two lists share (binary search over slice comparisons, which run in C)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:  # invariant: a[:low] == b[:low] and a[:high + 1] != b[:high + 1]
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class FreeSlots:
    """The free slots, least recently freed first."""

    def __init__(self, n_slots: int):
        self._slots: collections.OrderedDict[int, SlotCache] = collections.OrderedDict((i, SlotCache()) for i in range(n_slots))

    def __len__(self) -> int:
        return len(self._slots)

    def take(self, prompt: list[int], exact: bool, busy: set[int]) -> tuple[int, SlotCache, int]:
        """The slot for `prompt` (see the module's docstring): its id, cache and how many leading tokens of the
        prompt its cells hold (with `exact`, its cells read as a prompt: for a seeded job). `busy`: the slots
        generating or reading now."""
        shares = {seq_id: cache.share(prompt, exact) for seq_id, cache in self._slots.items()}
        best = max(shares, key=shares.get)  # the first of equals: the least recently freed
        if shares[best] <= SIMILARITY * len(prompt):
            best = self._beside(busy)
        elif shares[best] < self._slots[best].logits_at / 2:
            best = next((seq_id for seq_id, cache in self._slots.items() if not cache.tokens), best)
        return best, self._slots.pop(best), shares[best]

    def holding(self, prompt: list[int], exact: bool) -> tuple[int | None, int, int]:
        """The free slot whose cells hold the longest start of `prompt` (see `SlotCache.share`): its id, how many
        tokens, and its count of exact cells; (None, 0, 0) if there is no free slot."""
        shares = ((seq_id, cache.share(prompt, exact), cache.exact) for seq_id, cache in self._slots.items())
        return max(shares, key=lambda share: share[1], default=(None, 0, 0))

    def take_any(self, busy: set[int]) -> tuple[int, SlotCache]:
        """A slot for a job with no use for a cache (see `_beside`)."""
        seq_id = self._beside(busy)
        return seq_id, self._slots.pop(seq_id)

    def _beside(self, busy: set[int]) -> int:
        """The least recently freed slot next to a busy one, else the least recently freed. llama.cpp decodes a
        batch in one ubatch (one pass over the weights) per run of consecutive sequence ids, so three
        sequences in slots 0, 2 and 4 take three passes a token, in slots 0, 1 and 2 one."""
        return next((seq_id for seq_id in self._slots if seq_id - 1 in busy or seq_id + 1 in busy), next(iter(self._slots)))

    def items(self) -> list[tuple[int, SlotCache]]:
        return list(self._slots.items())

    def put(self, seq_id: int, cache: SlotCache) -> None:
        self._slots[seq_id] = cache
