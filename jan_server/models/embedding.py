"""Embeddings: a llama.cpp context of a running model, opened for pooled embeddings on first use.

The context shares the model's weights with the chat context (jan_server.models.batching.Runner opens it
lazily and closes it before the model). It pools as the GGUF says (`<arch>.pooling_type`: mean, CLS or last
token), mean where the GGUF names none (a chat model). Many inputs are read in one decode, one sequence each
(up to MAX_SEQUENCES sequences and `n_ctx` tokens per decode, more decodes for more), then the cells are
cleared. Identical inputs are read once, so they get the very same vector (read in different places of one batch
they could differ in the last bit). Vectors are L2-normalised. One request embeds at a time (the context has one batch).
"""

from __future__ import annotations

import threading

import llama_cpp
import numpy as np

from jan_server.errors import ConflictError, InvalidRequestError, ServerError
from jan_server.models import raw_prompt

#: Sequences decoded together in one batch (llama.cpp allows up to 256).
MAX_SEQUENCES = 64
POOLINGS = (llama_cpp.LLAMA_POOLING_TYPE_MEAN, llama_cpp.LLAMA_POOLING_TYPE_CLS, llama_cpp.LLAMA_POOLING_TYPE_LAST)


def pooling_of(model) -> int:
    """The GGUF's pooling type if it names mean, CLS or last-token pooling; otherwise mean."""
    metadata = model.metadata()
    named = metadata.get(f"{metadata.get('general.architecture')}.pooling_type")
    try:
        pooling = int(named)
    except (TypeError, ValueError):
        return llama_cpp.LLAMA_POOLING_TYPE_MEAN
    return pooling if pooling in POOLINGS else llama_cpp.LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """A pooled-embedding context on a loaded model: inputs of up to `n_ctx` tokens each."""

    def __init__(self, model, *, model_id: str, n_ctx: int, n_threads: int, rope: dict | None = None):
        self.model = model
        self.model_id = model_id
        self.n_ctx = n_ctx
        self.n_embd = model.n_embd()
        self.pooling = pooling_of(model)
        self._lock = threading.Lock()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # a sequence is pooled within one ubatch
        params.n_seq_max = MAX_SEQUENCES
        params.kv_unified = True  # the batch's sequences share the n_ctx cells, cleared after each decode
        params.embeddings = True
        params.pooling_type = self.pooling
        params.n_threads = params.n_threads_batch = n_threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as llama_cpp.Llama: the same vectors
        params.no_perf = True
        for name, value in (rope or {}).items():  # the chat context's positions (jan_server.models.loading.rope_params)
            setattr(params, name, value)
        self.ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not self.ctx:
            self.ctx = None
            raise ValueError(f"could not create an embedding context of {n_ctx} cells")
        self.memory = llama_cpp.llama_get_memory(self.ctx)  # None for a model without a KV cache (an encoder)
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)

    def embed(self, inputs: list[raw_prompt.Prompt]) -> tuple[list[np.ndarray], int]:
        """The unit vectors of the inputs (text or token ids) and how many tokens they made; 400 for an input
        with no tokens or more than `n_ctx`, or with ids outside the vocabulary."""
        with self._lock:
            if self.ctx is None:
                raise ConflictError(f"Model '{self.model_id}' is stopping.", param="model", code="model_stopping")
            prompts = [self._tokens(prompt) for prompt in inputs]
            distinct = list(dict.fromkeys(map(tuple, prompts)))  # identical inputs read once: the very same vector
            vectors: list[np.ndarray] = []
            group: list[list[int]] = []
            for tokens in map(list, distinct):
                if group and (len(group) == MAX_SEQUENCES or sum(map(len, group)) + len(tokens) > self.n_ctx):
                    vectors += self._decode(group)
                    group = []
                group.append(tokens)
            vectors += self._decode(group)
        of = dict(zip(distinct, vectors))
        return [of[tuple(tokens)] for tokens in prompts], sum(map(len, prompts))

    def close(self) -> None:
        """Free the batch and context (after any embedding under way); the model is the Runner's to free."""
        with self._lock:
            ctx, self.ctx = self.ctx, None
            if ctx is not None:
                llama_cpp.llama_batch_free(self.batch)
                llama_cpp.llama_free(ctx)

    def _tokens(self, prompt: raw_prompt.Prompt) -> list[int]:
        tokens = raw_prompt.tokens_of(self.model, prompt, param="input", special=False)
        if not tokens:
            raise InvalidRequestError("An input has no tokens to embed.", param="input", code="empty_input")
        return raw_prompt.fits(tokens, self.n_ctx, param="input")

    def _decode(self, group: list[list[int]]) -> list[np.ndarray]:
        batch, count = self.batch, 0
        for seq_id, tokens in enumerate(group):
            for position, token in enumerate(tokens):
                batch.token[count], batch.pos[count], batch.n_seq_id[count], batch.logits[count] = token, position, 1, True
                batch.seq_id[count][0] = seq_id
                count += 1
        batch.n_tokens = count
        try:
            status = llama_cpp.llama_decode(self.ctx, batch)
            if status != 0:
                raise ServerError(f"Embedding failed: llama_decode returned {status}.", code="embedding_failed")
            vectors = []
            for seq_id in range(len(group)):
                pooled = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(self.ctx, seq_id), shape=(self.n_embd,))
                vector = pooled.astype(np.float32)
                norm = float(np.linalg.norm(vector))
                vectors.append(vector / norm if norm > 0 else vector)
            return vectors
        finally:
            if self.memory:
                llama_cpp.llama_memory_clear(self.memory, True)
