"""A running model: the llama backend (context, batch, samplers), the prompt formatter and the scheduler that
batches its chats (see jan_server.models.scheduler for how).

Request threads format and tokenize prompts themselves (`prepare`), then `submit` the job and wait on its event
queue; blocked waits hold no GIL, so the HTTP side stays responsive while the model generates. `close()` cancels
the running and waiting jobs (503 `model_stopping`) and frees the context and the model.
"""

from __future__ import annotations

import threading

from jan_server.errors import ConflictError
from jan_server.models.jobs import Job, Sampling
from jan_server.models.prompt import PromptFormatter
from jan_server.models.registry import ModelRecord
from jan_server.models.scheduler import Scheduler

__all__ = ["Job", "Runner", "Sampling"]


class Runner:
    """A loaded model with its context, its FIFO of waiting jobs and the scheduler thread that batches them."""

    def __init__(self, record: ModelRecord, model, load_settings: dict, max_queued: int):
        from jan_server.models.llama_backend import LlamaBackend

        self.record = record
        self.model = model
        self.load_settings = load_settings
        self.max_queued = max_queued
        self.n_ctx = load_settings["ctx_len"]
        self.n_slots = load_settings["n_parallel"]
        n_batch = max(load_settings["n_batch"], self.n_slots)
        self._closing = threading.Lock()  # held while a request thread tokenizes: close() frees the vocabulary
        self._closed = False
        self.backend = LlamaBackend(model, n_ctx=self.n_ctx, n_slots=self.n_slots, n_batch=n_batch, n_threads=load_settings["n_threads"])
        try:
            self.prompts = PromptFormatter(model, self.n_ctx)
            self.scheduler = Scheduler(self.backend, model_id=record.id, n_slots=self.n_slots, n_batch=n_batch, max_queued=max_queued)
        except BaseException:
            self.backend.close()
            raise

    def stats(self) -> dict:
        return {**self.load_settings, **self.scheduler.stats()}

    def prepare(self, messages: list[dict], parameters: dict, tools: list[dict] | None = None) -> Job:
        """Render the chat template (offering `tools`) and tokenize (in the caller's thread); refuse prompts that do not fit."""
        prompt = self.prompts.format(messages, tools)
        sampling = Sampling.from_parameters({**self.record.parameters, **parameters})
        sampling.stop += prompt.stops
        with self._closing:
            if self._closed:
                raise ConflictError(f"Model '{self.record.id}' is stopping.", param="model", code="model_stopping")
            tokens = self.prompts.tokenize(prompt)
        sampling.max_tokens = min(sampling.max_tokens, self.n_ctx - len(tokens))
        return Job(prompt_tokens=tokens, sampling=sampling)

    def submit(self, job: Job) -> Job:
        return self.scheduler.submit(job)

    def close(self) -> None:
        """Refuse new jobs, cancel the running and waiting ones, stop the scheduler, free the context and model."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        self.scheduler.close()  # the thread has ended: nothing uses the context any more
        self.backend.close()
