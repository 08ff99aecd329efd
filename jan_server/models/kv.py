"""KV memory as one budget: how many cells a model's context gets, and which of them its sequences hold.

By default a model's context is its trained context (`n_ctx_train`), shared by all its slots (llama.cpp's
unified KV cache: a long prompt uses what short ones leave) or, for a deterministic model, that many cells per
slot (jan_server.models.llama_backend says why). If the KV cache would take more than `MEMORY_SHARE` of the
memory available, the context is halved until it does not (never below `MIN_CTX`). An explicit `ctx_len` in the
model's settings is taken as it is, if its KV cache fits in the memory available at all (`check_fits`).

llama.cpp tells nothing of how many cells are in use, so `Cells` keeps that count as llama.cpp does: a decoded
token takes a cell, a copy between sequences shares the source's cells (each cell is freed when no sequence
holds it any more), a restore takes a cell per restored token. The scheduler makes room from it
(jan_server.models.room) before each decode, so llama_decode never runs out of cells.
"""

from __future__ import annotations

from jan_server.models.prompt_cache import available_memory

MEMORY_SHARE = 0.5  # of the memory available when the model starts
MIN_CTX = 2048  # the context of a model whose trained one is larger: what it was before contexts followed training
KV_BYTES = 2  # f16 keys and values


def default_context(n_ctx_train: int, cell_bytes: int, copies: int, available: int | None = None) -> int:
    """The trained context, halved while `copies` KV caches of that many cells of `cell_bytes` would take more
    than MEMORY_SHARE of the memory `available` (by default, now)."""
    available = available_memory() if available is None else available
    n_ctx = n_ctx_train
    while n_ctx > MIN_CTX and n_ctx * cell_bytes * copies > MEMORY_SHARE * available:
        n_ctx //= 2
    return max(n_ctx, min(n_ctx_train, MIN_CTX))


def check_fits(n_ctx: int, cell_bytes: int, copies: int, available: int | None = None) -> None:
    """A ValueError if `copies` KV caches of `n_ctx` cells would take more than the memory available: llama.cpp
    would allocate them, and the system would kill the server (or another process) once they are written."""
    available = available_memory() if available is None else available
    needed = n_ctx * cell_bytes * copies
    if needed > available:
        raise ValueError(f"a KV cache of {n_ctx} x {copies} cells needs {needed // 2**20} MiB, more than the {available // 2**20} MiB of memory available")


def cell_bytes(n_layer: int, n_embd: int, n_head: int, n_head_kv: int) -> int:
    """The bytes of one cell: a key and a value of every layer's KV heads."""
    return 2 * n_layer * n_head_kv * (n_embd // n_head) * KV_BYTES


class Cells:
    """The cells of a unified cache of `size` cells, as the sequences hold them (see the module's docstring)."""

    def __init__(self, size: int):
        self.size = size
        self._held: dict[int, list[int]] = {}  # per sequence, the cell of each position from 0
        self._refs: dict[int, int] = {}  # per cell in use, how many sequences hold it
        self._next = 0

    @property
    def free(self) -> int:
        return self.size - len(self._refs)

    def held(self, seq_id: int) -> int:
        """How many cells the sequence holds (its positions 0 to held - 1)."""
        return len(self._held.get(seq_id, ()))

    def own(self, seq_id: int) -> int:
        """How many cells clearing the sequence would free (those no other sequence shares)."""
        return sum(1 for cell in self._held.get(seq_id, ()) if self._refs[cell] == 1)

    def grow(self, seq_id: int, position: int, count: int) -> None:
        """`count` tokens decoded from `position` on."""
        self.clear(seq_id, position)
        held = self._held.setdefault(seq_id, [])
        for cell in range(self._next, self._next + count):
            held.append(cell)
            self._refs[cell] = 1
        self._next += count

    def clear(self, seq_id: int, start: int) -> None:
        held = self._held.get(seq_id, [])
        for cell in held[max(start, 0):]:
            self._refs[cell] -= 1
            if not self._refs[cell]:
                del self._refs[cell]
        del held[max(start, 0):]

    def copy(self, source: int, target: int) -> None:
        """The target's cells become the source's, shared."""
        self.clear(target, 0)
        self._held[target] = list(self._held.get(source, ()))
        for cell in self._held[target]:
            self._refs[cell] += 1

    def restore(self, seq_id: int, count: int) -> None:
        self.clear(seq_id, 0)
        self.grow(seq_id, 0, count)
