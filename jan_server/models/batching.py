"""A running model: the llama backend (context, batch, samplers), the prompt formatter and the scheduler that
batches its chats (see jan_server.models.scheduler for how).

Request threads format and tokenize prompts themselves (`prepare`), then `submit` the job and wait on its event
queue; blocked waits hold no GIL, so the HTTP side stays responsive while the model generates. `close()` cancels
the running and waiting jobs (503 `model_stopping`) and frees the context and the model.
"""

from __future__ import annotations

import threading

from jan_server.errors import ConflictError, InvalidRequestError
from jan_server.models import kv, raw_prompt
from jan_server.models.jobs import Job, Sampling, choice_jobs
from jan_server.models.loading import rope_params, rope_scale
from jan_server.models.prompt import PromptFormatter
from jan_server.models.prompt_cache import HostCache
from jan_server.models.registry import ModelRecord
from jan_server.models.scheduler import Scheduler
from jan_server.models.usage import Usage

__all__ = ["Job", "Runner", "Sampling"]


class Runner:
    """A loaded model with its context, its FIFO of waiting jobs and the scheduler thread that batches them."""

    def __init__(self, record: ModelRecord, model, load_settings: dict, max_queued: int, usage: Usage | None = None,
                 prompt_cache: HostCache | None = None):
        from jan_server.models.llama_backend import LlamaBackend

        self.record = record
        self.model = model
        self.load_settings = load_settings
        self.max_queued = max_queued
        self.usage = usage or Usage()
        self.n_slots = load_settings["n_parallel"]
        unified = not load_settings["deterministic"]
        try:
            self.n_ctx = load_settings["ctx_len"] = context_size(model, load_settings["ctx_len"], 1 if unified else self.n_slots)
            load_settings["rope_scale"] = rope_scale(load_settings, model.n_ctx_train())
        except BaseException:
            model.close()
            raise
        self._closing = threading.Lock()  # held while a request thread tokenizes: close() frees the vocabulary
        self._closed = False
        self._embedder = None  # opened on the first embedding request (see embedder())
        self.backend = LlamaBackend(model, n_ctx=self.n_ctx, n_slots=self.n_slots, n_batch=load_settings["n_batch"], n_threads=load_settings["n_threads"],
                                    flash_attn=load_settings["flash_attn"], unified=unified, rope=rope_params(load_settings))
        try:
            self.prompts = PromptFormatter(model, self.n_ctx)
            self.scheduler = Scheduler(self.backend, model_id=record.id, n_slots=self.n_slots, n_batch=self.backend.n_batch, max_queued=max_queued,
                                       cache=prompt_cache, cache_key=cache_key(record, load_settings))
        except BaseException:
            self.backend.close()
            raise

    def stats(self) -> dict:
        return {**self.load_settings, **self.scheduler.stats()}

    def prepare(self, messages: list[dict], parameters: dict, tools: list[dict] | None = None) -> Job:
        """Render the chat template (offering `tools`) and tokenize (in the caller's thread); refuse prompts that do not fit."""
        self._refuse_embedding_only()
        prompt = self.prompts.format(messages, tools)
        sampling = Sampling.from_parameters({**self.record.parameters, **parameters})
        sampling.stop += prompt.stops
        with self._closing:
            if self._closed:
                raise ConflictError(f"Model '{self.record.id}' is stopping.", param="model", code="model_stopping")
            tokens = self.prompts.tokenize(prompt)
        sampling.max_tokens = min(sampling.max_tokens, self.n_ctx - len(tokens))
        return Job(prompt_tokens=tokens, sampling=sampling, deterministic=self.load_settings["deterministic"], **routing(parameters))

    def count(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """The prompt tokens of a chat (as `prepare` makes them), even more than the context holds."""
        self._refuse_embedding_only()
        prompt = self.prompts.format(messages, tools)
        with self._closing:
            self._refuse_closed()
            return len(self.prompts.encode(prompt))

    # Prompts without a chat template (completions) and embeddings: jan_server.models.raw_prompt and .embedding.
    def prepare_text(self, prompt: raw_prompt.Prompt, parameters: dict, suffix: str | None = None) -> Job:
        """Tokenize a raw prompt (text or token ids; with `suffix`, fill-in-the-middle); refuse what does not fit."""
        self._refuse_embedding_only()
        sampling = Sampling.from_parameters({**self.record.parameters, **parameters})
        with self._closing:
            self._refuse_closed()
            tokens = raw_prompt.tokens_of(self.model, prompt, param="prompt") or [raw_prompt.start_token(self.model)]
            if suffix is not None:
                tokens = raw_prompt.fill_in_the_middle(self.model, tokens, raw_prompt.tokens_of(self.model, suffix, param="suffix"))
        raw_prompt.fits(tokens, self.n_ctx, param="prompt", room=1)
        sampling.max_tokens = min(sampling.max_tokens, self.n_ctx - len(tokens))
        return Job(prompt_tokens=tokens, sampling=sampling, deterministic=self.load_settings["deterministic"], **routing(parameters))

    def detokenize(self, tokens: list[int]) -> str:
        with self._closing:
            self._refuse_closed()
            return self.model.detokenize(tokens, special=True).decode("utf-8", errors="replace")

    def embedder(self):
        """The model's embedding context (jan_server.models.embedding.Embedder), opened on first use."""
        from jan_server.models.embedding import Embedder

        with self._closing:
            self._refuse_closed()
            if self._embedder is None:
                try:
                    self._embedder = Embedder(self.model, model_id=self.record.id, n_ctx=self.n_ctx, n_threads=self.load_settings["n_threads"],
                                              rope=rope_params(self.load_settings))
                except ValueError as exc:
                    raise ConflictError(f"Could not open model '{self.record.id}' for embeddings: {exc}", code="model_load_failed") from None
            return self._embedder

    def _refuse_closed(self) -> None:
        if self._closed:
            raise ConflictError(f"Model '{self.record.id}' is stopping.", param="model", code="model_stopping")

    def _refuse_embedding_only(self) -> None:
        """A model whose settings say `embedding: true` embeds only: generating text on it is a 400."""
        if self.record.settings.get("embedding"):
            raise InvalidRequestError(
                f"Model '{self.record.id}' is an embedding model: use it with /v1/embeddings.", param="model", code="model_not_supported"
            )

    def submit(self, job: Job) -> Job:
        return self.submit_choices(job, 1)[0]

    def submit_choices(self, job: Job, n: int) -> list[Job]:
        """Submit `n` choices of a prepared job, decoded as parallel sequences that share one prefill (choice i
        seeded seed + i); read them with jan_server.models.jobs.choices. More than n_parallel: 400 on `n`."""
        if n > self.n_slots:
            raise InvalidRequestError(
                f"n={n} is more than model '{self.record.id}' runs at once (n_parallel={self.n_slots}).", param="n", code="invalid_value"
            )
        choices = choice_jobs(job, n)
        for choice in choices:
            self.usage.watch(self.record.id, choice)
        self.scheduler.submit_group(choices)
        self.usage.accepted(self.record.id, job)  # the prompt is read once for every choice
        return choices

    def close(self) -> bool:
        """Refuse new jobs, cancel the running and waiting ones, stop the scheduler, free the context and model.
        False if a decode outlasted the scheduler's close (CLOSE_TIMEOUT): they are freed once it returns."""
        with self._closing:
            if self._closed:
                return True
            self._closed = True
        if self.scheduler.close():
            self._free()
            return True
        threading.Thread(target=self._free, name=f"free:{self.record.id}", daemon=True).start()
        return False

    def _free(self) -> None:
        self.scheduler.thread.join()  # once it has ended, nothing uses the context any more
        self.scheduler.keep_slots()
        if self._embedder is not None:
            self._embedder.close()  # waits for an embedding under way
        self.backend.close()


def routing(parameters: dict) -> dict:
    """The job's `route` and `label` from its parameters (a wire layer's `route`, and `label` if it differs)."""
    return {"route": parameters.get("route"), "label": parameters.get("label", parameters.get("route"))}


def context_size(model, ctx_len: int, copies: int) -> int:
    """The model's context: `ctx_len`, or (0) its trained one where `copies` KV caches of it fit; a ValueError if
    they do not fit in the memory available (jan_server.models.kv)."""
    import llama_cpp

    weights = model.model
    size = kv.cell_bytes(llama_cpp.llama_model_n_layer(weights), llama_cpp.llama_model_n_embd(weights),
                         llama_cpp.llama_model_n_head(weights), llama_cpp.llama_model_n_head_kv(weights))
    n_ctx = ctx_len or kv.default_context(llama_cpp.llama_model_n_ctx_train(weights), size, copies)
    kv.check_fits(n_ctx, size, copies)
    return n_ctx


def cache_key(record: ModelRecord, load_settings: dict) -> str:
    """What a model's cells depend on: its weights file (path, size, modification time) and the settings the
    context was made with. Entries of the prompt cache are kept under it (jan_server.models.prompt_cache)."""
    weights = record.weights.stat()
    context = {key: load_settings[key] for key in ("ctx_len", "flash_attn", "deterministic", "rope_scaling", "rope_scale")}
    return f"{record.weights.resolve()}:{weights.st_size}:{weights.st_mtime_ns}:{sorted(context.items())}"
