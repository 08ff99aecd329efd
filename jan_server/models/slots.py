"""The free slots of a scheduler and what each still holds, so a new job is seated where most of its prompt is
already decoded.

A slot that served a job keeps its prompt's cells. The next turn of a conversation resends that prompt, then the
answer and the new message, so seating it in that slot leaves only those two to read. The answer's own cells
are not reused, on purpose: llama.cpp computes the cells of a token decoded alone (as every generated token is)
slightly differently from the same token read within a prompt (we measured logits up to 0.6 apart on SmolLM2),
so reusing them would break the promise that a seed gives the same text with or without a cache. A slot also
keeps the logits after its prompt's final token: a job with exactly that prompt (a retry, a regenerate) samples
its first token from them, reading nothing.

As in llama-server, a slot is chosen for its prefix only if that covers more than `SIMILARITY` of the prompt,
else the least recently used one is; unlike it, a slot that would lose more than half of its last prompt is passed
over for an empty one, so another client's conversation is not evicted for a shared system prompt (a regenerate
or a next turn keeps all of its last prompt, and stays).

A prompt that is all in a slot's cells without those logits (a shorter one) reads its last token again: that
token's logits are the first token's distribution.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

SIMILARITY = 0.1  # llama-server's default --slot-prompt-similarity


@dataclass
class SlotCache:
    """What a free slot holds: `tokens` are those whose cells are in the slot, from position 0 (its last prompt, or
    what of it was read); `logits` (or None) are the logits after `tokens[:logits_at]`."""

    tokens: list[int] = field(default_factory=list)
    logits: object = None
    logits_at: int = 0


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

    def take(self, prompt: list[int]) -> tuple[int, SlotCache, int]:
        """The slot for `prompt` (see the module's docstring): its id, cache and how many leading tokens of the
        prompt its cells hold."""
        shares = {seq_id: common_prefix(cache.tokens, prompt) for seq_id, cache in self._slots.items()}
        best = max(shares, key=shares.get)  # the first of equals: the least recently freed
        if shares[best] <= SIMILARITY * len(prompt):
            best = next(iter(self._slots))
        elif shares[best] < self._slots[best].logits_at / 2:
            best = next((seq_id for seq_id, cache in self._slots.items() if not cache.tokens), best)
        return best, self._slots.pop(best), shares[best]

    def take_any(self) -> tuple[int, SlotCache]:
        """The least recently freed slot."""
        return self._slots.popitem(last=False)

    def put(self, seq_id: int, cache: SlotCache) -> None:
        self._slots[seq_id] = cache
