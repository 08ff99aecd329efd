"""The free slots of a scheduler and what each still holds, so a new job is seated where most of its prompt is
already decoded.

A slot that served a job keeps its cells: its prompt's, and its answer's (in a unified cache with a prompt cache,
until another job is seated: they then go to the prompt cache, jan_server.models.room). The next turn of a
conversation resends that prompt, then the answer and the new message, so seating it in that slot leaves only the
new message to read.
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

A client may say which conversation a request continues (`prompt_cache_key`, a Responses `conversation` or
`previous_response_id`, a Messages `metadata.user_id` with a `cache_control` marker: jan_server.web.anthropic_route;
the job's `route`): the slot that last served that conversation (its `label`) is then
taken whatever the prefixes say; without one, a slot that no conversation claims, else the least recently used.
So two conversations that share a system prompt alternate in slots of their own instead of evicting each other's
answers (what they share is copied from the other slot, jan_server.models.seating).

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
    label: str | None = None  # the conversation it served, as its client named it (see the module's docstring)
    offered: bool = False  # given to the prompt cache while the scheduler was idle (jan_server.models.room)

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

    def take(self, prompt: list[int], exact: bool, busy: set[int], route: str | None = None) -> tuple[int, SlotCache, int]:
        """The slot for `prompt` (see the module's docstring): its id, cache and how many leading tokens of the
        prompt its cells hold (with `exact`, its cells read as a prompt: for a seeded job). `busy`: the slots
        generating or reading now; `route`: the conversation the job continues, if its client said."""
        slots = self._slots
        if route is not None:
            own = [seq_id for seq_id, cache in slots.items() if cache.label == route]
            if own:
                cache = slots.pop(own[-1])
                return own[-1], cache, cache.share(prompt, exact)
            slots = {seq_id: cache for seq_id, cache in slots.items() if cache.label is None}
            if not slots:  # every free slot serves a conversation: the least recently used gives way
                seq_id = next(iter(self._slots))
                cache = self._slots.pop(seq_id)
                return seq_id, cache, cache.share(prompt, exact)
        shares = {seq_id: cache.share(prompt, exact) for seq_id, cache in slots.items()}
        best = max(shares, key=shares.get)  # the first of equals: the least recently freed
        if shares[best] <= SIMILARITY * len(prompt):
            best = self._beside(busy, slots)
        elif shares[best] < slots[best].logits_at / 2:
            best = next((seq_id for seq_id, cache in slots.items() if not cache.tokens), best)
        return best, self._slots.pop(best), shares[best]

    def holding(self, prompt: list[int], exact: bool) -> tuple[int | None, int, int]:
        """The free slot whose cells hold the longest start of `prompt` (see `SlotCache.share`): its id, how many
        tokens, and its count of exact cells; (None, 0, 0) if there is no free slot."""
        shares = ((seq_id, cache.share(prompt, exact), cache.exact) for seq_id, cache in self._slots.items())
        return max(shares, key=lambda share: share[1], default=(None, 0, 0))

    def take_any(self, busy: set[int]) -> tuple[int, SlotCache]:
        """A slot for a job with no use for a cache (see `_beside`)."""
        seq_id = self._beside(busy, self._slots)
        return seq_id, self._slots.pop(seq_id)

    @staticmethod
    def _beside(busy: set[int], slots) -> int:
        """Of `slots`, the least recently freed next to a busy one, else the least recently freed. llama.cpp
        decodes a batch of a non-unified cache in one ubatch (one pass over the weights) per run of consecutive
        sequence ids, so three sequences in slots 0, 2 and 4 take three passes a token, in slots 0, 1 and 2 one."""
        return next((seq_id for seq_id in slots if seq_id - 1 in busy or seq_id + 1 in busy), next(iter(slots)))

    def items(self) -> list[tuple[int, SlotCache]]:
        return list(self._slots.items())

    def put(self, seq_id: int, cache: SlotCache) -> None:
        self._slots[seq_id] = cache
