"""The model manager: loads GGUF models into llama_cpp.Llama and runs their generations.

A Llama context decodes one sequence at a time, so each running model has one worker thread that takes jobs
from a FIFO queue. Request threads format and tokenize the prompt themselves (the tokenizer is read-only and
safe to share), then wait on their job's event queue; blocked waits hold no GIL, so the HTTP side stays
responsive while a model generates. The worker checks each job's `cancelled` event between tokens.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from jan_server.downloads import DownloadManager
from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError, RateLimitError, ServerError
from jan_server.registry import ModelRecord, Registry, validate_model_id

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_load_lock = threading.Lock()  # llama-cpp-python's quiet mode redirects the process's stderr while loading


@dataclass
class Sampling:
    """One request's generation parameters, after the model's defaults were applied."""

    max_tokens: int
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None

    @classmethod
    def from_parameters(cls, parameters: dict) -> "Sampling":
        stop = parameters.get("stop") or []
        return cls(
            max_tokens=int(parameters.get("max_tokens") or 2048),
            temperature=float(parameters.get("temperature", 0.7)),
            top_p=float(parameters.get("top_p", 0.95)),
            top_k=int(parameters.get("top_k", 40)),
            min_p=float(parameters.get("min_p", 0.05)),
            presence_penalty=float(parameters.get("presence_penalty") or 0.0),
            frequency_penalty=float(parameters.get("frequency_penalty") or 0.0),
            seed=parameters.get("seed"),
            stop=[stop] if isinstance(stop, str) else list(stop),
            grammar=parameters.get("grammar"),
        )


@dataclass
class Job:
    """One generation: the worker puts ("delta", text), then ("done", finish_reason) or ("error", ApiError)."""

    prompt_tokens: list[int]
    sampling: Sampling
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def usage(self) -> dict:
        prompt = len(self.prompt_tokens)
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens, "total_tokens": prompt + self.completion_tokens}

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        """The text deltas as they come; raises the job's ApiError if generation failed."""
        while True:
            kind, value = self.events.get()
            if kind == "delta":
                yield value
            elif kind == "done":
                self.finish_reason = value
                return
            else:
                raise value

    def result(self) -> str:
        return "".join(self)


class StopMatcher:
    """Finds stop strings in streamed text, holding back any tail that could be the start of one."""

    def __init__(self, stops: list[str]):
        self.stops = [stop for stop in stops if stop]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [index for index in (self.pending.find(stop) for stop in self.stops) if index >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def check_gguf(path) -> None:
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path.name} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")


class Runner:
    """A loaded model: its Llama, its job queue and the worker thread that serves it."""

    def __init__(self, record: ModelRecord, llama, load_settings: dict, max_queued: int):
        from llama_cpp import llama_chat_format

        self.record = record
        self.llama = llama
        self.load_settings = load_settings
        self.max_queued = max_queued
        self._waiting: collections.deque[Job | None] = collections.deque()
        self._ready = threading.Condition()
        self.generated_tokens = 0
        self.completed_requests = 0
        self.cancelled_requests = 0
        self._closing = threading.Lock()
        self._closed = False
        self._pieces: dict[int, bytes] = {}
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            model = llama._model
            eos, bos = llama.token_eos(), llama.token_bos()
            self.format = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        else:
            self.format = llama_chat_format.format_chatml
        self.thread = threading.Thread(target=self._work, name=f"model:{record.id}", daemon=True)
        self.thread.start()

    @property
    def n_ctx(self) -> int:
        return self.llama.n_ctx()

    def stats(self) -> dict:
        return {
            **self.load_settings,
            "generated_tokens": self.generated_tokens,
            "completed_requests": self.completed_requests,
            "cancelled_requests": self.cancelled_requests,
            "queued_requests": len(self._waiting),
        }

    def prepare(self, messages: list[dict], parameters: dict) -> Job:
        """Render the chat template and tokenize (in the caller's thread); refuse prompts that do not fit."""
        formatted = self.format(messages=messages)
        sampling = Sampling.from_parameters({**self.record.parameters, **parameters})
        stop = formatted.stop or []
        sampling.stop += [stop] if isinstance(stop, str) else list(stop)
        with self._closing:
            if self._closed:
                raise ConflictError(f"Model '{self.record.id}' is stopping.", param="model", code="model_stopping")
            tokens = self.llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
        if len(tokens) >= self.n_ctx:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your messages resulted in "
                f"{len(tokens)} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        sampling.max_tokens = min(sampling.max_tokens, self.n_ctx - len(tokens))
        return Job(prompt_tokens=tokens, sampling=sampling)

    def submit(self, job: Job) -> Job:
        with self._closing, self._ready:
            if self._closed:
                raise ConflictError(f"Model '{self.record.id}' is stopping.", param="model", code="model_stopping")
            if len(self._waiting) >= self.max_queued:
                self._drop_cancelled()
            if len(self._waiting) >= self.max_queued:
                raise RateLimitError(
                    f"Model '{self.record.id}' already has {self.max_queued} requests waiting; retry shortly.",
                    retry_after=1,
                )
            self._waiting.append(job)
            self._ready.notify()
        return job

    def close(self) -> None:
        """Refuse new jobs, let the running and waiting ones finish, stop the worker, free the model."""
        with self._closing, self._ready:
            self._closed = True
            self._waiting.append(None)
            self._ready.notify()
        self.thread.join()
        self.llama.close()

    def _drop_cancelled(self) -> None:
        """Forget waiting jobs whose clients have gone, so they do not hold places in the queue."""
        for job in [job for job in self._waiting if job is not None and job.cancelled.is_set()]:
            self._waiting.remove(job)
            self.cancelled_requests += 1
            job.events.put(("done", None))

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                job = self._waiting.popleft()
            if job is None:
                return
            try:
                self._generate(job)
            except Exception as exc:  # keep serving the next job whatever happened to this one
                log.exception("generation failed on model %s", self.record.id)
                job.events.put(("error", ServerError(f"Generation failed: {exc}", code="generation_failed")))

    def _piece(self, token: int) -> bytes:
        """The token's bytes (cached: the vocabulary never changes)."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            vocab, buffer = self.llama._model.vocab, ctypes.create_string_buffer(64)
            size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            piece = self._pieces[token] = buffer.raw[:size]
        return piece

    def _generate(self, job: Job) -> None:
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        llama, sampling = self.llama, job.sampling
        if job.cancelled.is_set():
            self.cancelled_requests += 1
            job.events.put(("done", None))
            return
        llama.set_seed(sampling.seed & 0xFFFFFFFF if sampling.seed is not None else random.getrandbits(32))
        if sampling.seed is not None:
            llama.reset()  # no prompt-cache reuse, so the same seed always sees the same logits
        grammar = LlamaGrammar.from_string(sampling.grammar, verbose=False) if sampling.grammar else None
        vocab = llama._model.vocab
        piece = self._piece
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(sampling.stop)
        events = job.events
        finish = "length"
        tokens = llama.generate(
            job.prompt_tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            grammar=grammar,
        )
        for token in tokens:
            if job.cancelled.is_set():
                finish = None
                break
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            job.completion_tokens += 1
            self.generated_tokens += 1
            text, stopped = stops.feed(decoder.decode(piece(token)))
            if text:
                events.put(("delta", text))
            if stopped:
                finish = "stop"
                break
            if job.completion_tokens >= sampling.max_tokens:
                break
        tokens.close()
        if finish is None:
            self.cancelled_requests += 1
        else:
            self.completed_requests += 1
            tail = stops.flush() + decoder.decode(b"", final=True)
            if tail:
                events.put(("delta", tail))
        events.put(("done", finish))


class ModelManager:
    """Which models are loaded, and their lifecycle: downloaded -> starting -> running -> stopping."""

    def __init__(self, registry: Registry, *, n_threads: int | None = None, max_queued_requests: int = 32, downloads: DownloadManager | None = None):
        self.registry = registry
        self.downloads = downloads  # shows the progress of models not on disk yet
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_queued_requests = max_queued_requests
        self._runners: dict[str, Runner] = {}
        self._states: dict[str, tuple[str, str | None]] = {}  # transient: starting, stopping, error
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def describe(self, record: ModelRecord) -> dict:
        runner = self._runners.get(record.id)
        if runner is not None:
            obj = record.to_object("running", **runner.stats())
        else:
            state, error = self._states.get(record.id, (None, None))
            obj = record.to_object(state)
            if error:
                obj["error"] = error
        return self.downloads.overlay(obj) if self.downloads else obj

    def running(self, model_id: str) -> Runner | None:
        return self._runners.get(model_id)

    def start(self, model_id: str, overrides: dict | None = None) -> Runner:
        """Load the model unless it is loaded; a failed load leaves it in state `error` with the reason."""
        with self._model_lock(model_id):
            runner = self._runners.get(model_id)
            if runner is not None:
                return runner
            record = self.registry.get(model_id)
            if not record.downloaded:
                raise ConflictError(f"Model '{model_id}' is not downloaded yet.", param="model", code="model_not_downloaded")
            load_settings = self._load_settings(record, overrides or {})
            self._states[model_id] = ("starting", None)
            try:
                llama = self._load(record, load_settings)
            except Exception as exc:
                message = f"Could not load model '{model_id}': {exc}"
                self._states[model_id] = ("error", message)
                log.warning(message)
                raise ServerError(message, code="model_load_failed") from None
            runner = Runner(record, llama, load_settings, self.max_queued_requests)
            self._runners[model_id] = runner
            self._states.pop(model_id, None)
            return runner

    def stop(self, model_id: str) -> None:
        with self._model_lock(model_id):
            self._states.pop(model_id, None)
            runner = self._runners.get(model_id)
            if runner is None:
                return
            self._states[model_id] = ("stopping", None)
            try:
                runner.close()
            finally:
                del self._runners[model_id]
                self._states.pop(model_id, None)

    def forget(self, model_id: str) -> None:
        """Drop what is known about a deleted model (call after stop)."""
        self._states.pop(model_id, None)

    def runner_for(self, model_id: str) -> Runner:
        """The running model, started on first use; an id that cannot name a model is simply not found."""
        runner = self._runners.get(model_id)
        if runner is not None:
            return runner
        try:
            validate_model_id(model_id, param="model")
        except InvalidRequestError:
            raise NotFoundError("model", model_id, param="model") from None
        return self.start(model_id)

    def close(self) -> None:
        for model_id in list(self._runners):
            self.stop(model_id)

    def _model_lock(self, model_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(model_id, threading.Lock())

    def _load_settings(self, record: ModelRecord, overrides: dict) -> dict:
        settings = {**record.settings, **overrides}
        return {
            "ctx_len": int(settings.get("ctx_len") or 2048),
            "ngl": int(settings.get("ngl") or 0),
            "n_threads": int(settings.get("n_threads") or self.n_threads),
            "n_batch": int(settings.get("n_batch") or 512),
        }

    @staticmethod
    def _load(record: ModelRecord, load_settings: dict):
        import llama_cpp

        check_gguf(record.weights)
        with _load_lock:
            started = time.monotonic()
            llama = llama_cpp.Llama(
                model_path=str(record.weights),
                n_ctx=load_settings["ctx_len"],
                n_gpu_layers=load_settings["ngl"],
                n_threads=load_settings["n_threads"],
                n_threads_batch=load_settings["n_threads"],
                n_batch=load_settings["n_batch"],
                verbose=False,
            )
        log.info("loaded %s in %.2fs", record.id, time.monotonic() - started)
        return llama

