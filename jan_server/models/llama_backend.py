"""The scheduler's backend on llama.cpp: one context holding every sequence of a model, its batch and the samplers.

The context has `n_seq_max` = the model's `n_parallel` slots. Unified (the default), they share `n_ctx` cells
(llama.cpp's unified KV cache), whose use `cells` keeps count of (jan_server.models.kv) so that the scheduler
makes room before a decode; a whole step is then one llama_decode. A deterministic model's slots have `n_ctx`
cells each instead (not unified: `n_parallel` times the memory), because batch invariance needs llama.cpp's
`split_equal`, below. Each sequence has its own sampler (jan_server.models.sampler). With flash
attention off, the logits are the ones a single-sequence `Llama` (whose default it is) would give.

A non-unified cache makes llama.cpp split a batch of several sequences into ubatches holding equally many
tokens of each sequence, with consecutive sequence ids (`split_equal`): a prompt chunk decoded beside generating
sequences would give its first token a ubatch of its own sequence's alone, and a token decoded alone gets
slightly different cells (jan_server.models.slots), so a seed's text would depend on the batch. `decode`
therefore runs one llama_decode per row length, rows in sequence-id order: the generated tokens (one each) last,
in as few ubatches as their ids allow, and before them the prompt chunks of each length, whole.

Flash attention (on by default, as llama-server's `auto` is on a CPU) decodes about 15% faster here, but ggml's
CPU kernel computes a row three ways: chunks of at least its tile's 64 rows one way (whatever their length), fewer
rows another, and the one token of a sequence decoded alone (every generated token, once the sequence holds over
256 cells) a third, split across the threads. So with it a prompt chunk's cells are a cold read's only if the
chunk has 64 tokens or more (`min_chunk`), and a sequence whose text must not depend on the batch has its lone
tokens decoded on their own (`decode`'s `exact`).

The backend owns the model: `close()`, or a failure while setting up, frees batch, context and model.
Only the scheduler thread calls it, except `close()`, which runs after that thread ended. Importing this module
loads llama_cpp, so `jan_server.models.batching` imports it only when a model starts.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from jan_server.models.jobs import Sampling, TokenLogprob
from jan_server.models.backend import Row, batch_size
from jan_server.models.kv import Cells
from jan_server.models.sampler import Sampler

FLASH_TILE = 64  # ggml's CPU flash-attention tile (GGML_FA_TILE_Q): chunks of at least this many rows agree


class LlamaBackend:
    """A llama.cpp context for n_slots sequences sharing n_ctx cells (`unified`; else n_ctx cells each), decoding
    batches of up to `self.n_batch` tokens: `n_batch`, or enough for every slot's token and two prompt chunks of
    `min_chunk` (the scheduler's batch_size)."""

    def __init__(self, model, *, n_ctx: int, n_slots: int, n_batch: int, n_threads: int, flash_attn: bool, unified: bool,
                 rope: dict | None = None):
        self.model = model
        self.flash_attn = flash_attn
        #: The fewest tokens of a prompt chunk whose cells are those of any other split (a lone token's differ).
        self.min_chunk = FLASH_TILE if flash_attn else 2
        self.n_batch = n_batch = batch_size(n_batch, n_slots, self.min_chunk)
        self.ctx = None
        self.batch = None
        try:
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = n_ctx if unified else n_ctx * n_slots
            params.n_seq_max = n_slots
            params.n_batch = params.n_ubatch = n_batch
            params.n_threads = params.n_threads_batch = n_threads
            params.kv_unified = unified
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            params.no_perf = True
            for name, value in (rope or {}).items():  # jan_server.models.loading.rope_params
                setattr(params, name, value)
            self.ctx = llama_cpp.llama_init_from_model(model.model, params)
            if not self.ctx:
                self.ctx = None
                raise ValueError(f"could not create a context of {params.n_ctx} cells for {n_slots} sequences")
            self.memory = llama_cpp.llama_get_memory(self.ctx)
            #: The shared cells in use (None: each sequence has its own).
            self.cells = Cells(llama_cpp.llama_n_ctx(self.ctx)) if unified else None
            self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
            self.vocab = model.vocab
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        except BaseException:
            self.close()
            raise
        self._ends: list[int] = []  # the batch index of each row's last token in its llama_decode
        self._saved: dict[int, np.ndarray] = {}  # the kept logits of rows not in the last llama_decode
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        """Free the batch, the context and the model (each once, whatever fails)."""
        batch, self.batch = self.batch, None
        ctx, self.ctx = self.ctx, None
        try:
            if batch is not None:
                llama_cpp.llama_batch_free(batch)
        finally:
            try:
                if ctx is not None:
                    llama_cpp.llama_free(ctx)
            finally:
                self.model.close()

    def make_sampler(self, sampling: Sampling) -> Sampler:
        return Sampler(self.vocab, self.n_vocab, sampling, self.piece)

    def logprobs(self, logits, token: int, top: int) -> TokenLogprob:
        """The token's log-softmax over `logits` (a row's, before any sampler touched them) and the `top` best."""
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, top)[:top] if top else []
        best = sorted(best, key=lambda index: -logprobs[index])
        return TokenLogprob(self.piece(token), float(logprobs[token]), [(self.piece(int(i)), float(logprobs[i])) for i in best])

    def free_sampler(self, sampler: Sampler) -> None:
        sampler.close()

    def clear(self, seq_id: int, start: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1)
        if self.cells:
            self.cells.clear(seq_id, start)

    def copy(self, source: int, target: int) -> None:
        """All of the source's cells (a copy across sequences of a non-unified cache must take the whole range; a
        unified one adds the target to the source's cells, so its own must go first)."""
        if self.cells:
            self.clear(target, 0)
            self.cells.copy(source, target)
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def save(self, seq_id: int) -> memoryview:
        """The sequence's cells, written by llama.cpp straight into memory that is not zeroed first and not copied
        after (as ctypes buffers and bytes would be: 51 ms for 2,400 tokens' 55 MB against 6-27)."""
        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq_id)
        buffer = np.empty(size, dtype=np.uint8)
        written = llama_cpp.llama_state_seq_get_data(self.ctx, pointer(buffer), size, seq_id)
        if written == 0:
            raise RuntimeError(f"could not save the cells of sequence {seq_id}")
        return memoryview(buffer[:written])

    def restore(self, seq_id: int, state: bytes | memoryview) -> None:
        """The saved cells into the sequence, read where they are (llama.cpp drops its own first; on a failure it is
        left empty)."""
        data = np.frombuffer(state, dtype=np.uint8)
        if llama_cpp.llama_state_seq_set_data(self.ctx, pointer(data), data.size, seq_id) == 0:
            self.clear(seq_id, 0)
            raise RuntimeError(f"could not restore the cells of sequence {seq_id}")
        if self.cells:
            self.cells.restore(seq_id, llama_cpp.llama_memory_seq_pos_max(self.memory, seq_id) + 1)

    def decode(self, rows: list[Row], exact: set[int]) -> None:
        """Decode the rows: unified, in one llama_decode; else one per row length, and with flash attention each
        lone token of a sequence in `exact` in one of its own (see the module's docstring)."""
        if self.cells:
            self._ends, self._saved = [], {}
            self._decode(rows)
            for seq_id, position, tokens, _ in rows:
                self._ends.append((self._ends[-1] if self._ends else -1) + len(tokens))
                self.cells.grow(seq_id, position, len(tokens))
            return
        lengths: dict[int, list[int]] = {}
        alone: list[list[int]] = []
        for index, (seq_id, _, tokens, _) in sorted(enumerate(rows), key=lambda item: item[1][0]):
            if self.flash_attn and len(tokens) == 1 and seq_id in exact:
                alone.append([index])
            else:
                lengths.setdefault(len(tokens), []).append(index)
        groups = [lengths[length] for length in sorted(lengths, reverse=True)] + alone
        self._ends, self._saved = [0] * len(rows), {}
        for n, group in enumerate(groups):
            length = len(rows[group[0]][2])
            self._decode([rows[index] for index in group])
            last = n == len(groups) - 1
            for position, index in enumerate(group):
                self._ends[index] = (position + 1) * length - 1
                if rows[index][3] and not last:  # the next llama_decode overwrites the context's logits
                    self._saved[index] = self._row_logits(self._ends[index])

    def _decode(self, rows: list[Row]) -> None:
        batch, count = self.batch, 0
        token, pos, n_seq_id, seq_id, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        for sequence, position, tokens, wants_logits in rows:
            for token_id in tokens:
                token[count], pos[count], n_seq_id[count], logits[count] = token_id, position, 1, False
                seq_id[count][0] = sequence
                position += 1
                count += 1
            logits[count - 1] = wants_logits
        batch.n_tokens = count
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def _row_logits(self, end: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, end), shape=(self.n_vocab,)).copy()

    def logits(self, row: int):
        saved = self._saved.get(row)  # already a copy, of this decode's alone, that nothing writes to
        return saved if saved is not None else self._row_logits(self._ends[row])

    def sample(self, sampler: Sampler, row: int) -> int:
        saved = self._saved.get(row)
        if saved is not None or sampler.constrains:
            return sampler.sample(saved if saved is not None else self.logits(row))
        token = llama_cpp.llama_sampler_sample(sampler.chain.sampler, self.ctx, self._ends[row])  # the chain accepts it
        sampler.follow(token)
        return token

    def sample_cached(self, sampler: Sampler, logits) -> int:
        return sampler.sample(logits)

    def is_eog(self, token: int) -> bool:
        return llama_cpp.llama_vocab_is_eog(self.vocab, token)

    def piece(self, token: int) -> bytes:
        """The token's bytes (cached: the vocabulary never changes)."""
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            piece = self._pieces[token] = buffer.raw[:size]
        return piece


def pointer(array: np.ndarray):
    """A uint8 array's memory as the `uint8_t *` llama.cpp takes, without a copy."""
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
