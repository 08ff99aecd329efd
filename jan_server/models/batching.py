"""Continuous batching: one llama.cpp context decodes every live sequence of a model together.

Each running model has one scheduler thread that owns its context (made with `n_seq_max` = the model's
`n_parallel` slots, `ctx_len` cells each). Every step it admits waiting jobs (FIFO) into free slots, builds one
batch holding the next token of every generating sequence plus a chunk of any prompt still being read, decodes
once, samples each sequence with its own sampler chain (own seed, penalties, grammar), hands the text to the
job's event queue and retires finished or cancelled sequences, freeing their slots at once. A free slot keeps
its prompt's KV cells and last logits: a job with exactly that prompt (a retry, a regenerate) samples its first
token from them without a prefill, and gets the same logits a fresh prefill would give.
Request threads format and tokenize prompts themselves (the vocabulary is read-only), then wait on their job's
queue; blocked waits hold no GIL, so the HTTP side stays responsive while the model generates.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from jan_server.errors import ConflictError, InvalidRequestError, RateLimitError, ServerError
from jan_server.models.registry import ModelRecord

log = logging.getLogger(__name__)

PENALTY_LAST_N = 64  # llama_cpp.Llama's default window for presence/frequency penalties


@dataclass
class Sampling:
    """One request's generation parameters, after the model's defaults were applied."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: list[str]
    grammar: str | None

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
    """One generation: the scheduler puts ("delta", text), then ("done", finish_reason) or ("error", ApiError)."""

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


class Sequence:
    """A job in a slot: its KV sequence id, sampler chain, unread prompt and text state."""

    def __init__(self, job: Job, seq_id: int, sampler):
        self.job = job
        self.seq_id = seq_id
        self.sampler = sampler
        self.unread = list(job.prompt_tokens)  # prompt tokens not decoded yet
        self.position = 0  # next KV position
        self.next_token: int | None = None  # sampled, to be decoded in the next step
        self.prompt_logits = None  # the logits after the whole prompt, kept with the slot as a prompt cache
        self.logits_index = -1  # where this sequence's logits are in the last batch
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopMatcher(job.sampling.stop)


class Runner:
    """A loaded model: its context, its FIFO of waiting jobs and the scheduler thread that batches them."""

    def __init__(self, record: ModelRecord, model, load_settings: dict, max_queued: int):
        import llama_cpp
        from llama_cpp import llama_chat_format

        self.record = record
        self.model = model
        self.load_settings = load_settings
        self.max_queued = max_queued
        self.n_ctx = load_settings["ctx_len"]
        self.n_slots = load_settings["n_parallel"]
        self.n_batch = max(load_settings["n_batch"], self.n_slots)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * self.n_slots
        params.n_seq_max = self.n_slots
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = load_settings["n_threads"]
        params.kv_unified = False  # each sequence has its own ctx_len cells
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as llama_cpp.Llama: same logits as before
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model.model, params)
        if self.ctx is None:
            model.close()
            raise ValueError(f"could not create a context of {params.n_ctx} cells for {self.n_slots} sequences")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.vocab = model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self._waiting: collections.deque[Job | None] = collections.deque()
        self._ready = threading.Condition()
        self._live: list[Sequence] = []
        self._free: dict[int, tuple[list[int], object]] = {seq_id: ([], None) for seq_id in range(self.n_slots)}  # free slot -> cached prompt, its logits
        self.generated_tokens = 0
        self.completed_requests = 0
        self.cancelled_requests = 0
        self._closing = threading.Lock()
        self._closed = False
        self._pieces: dict[int, bytes] = {}
        template = model.metadata().get("tokenizer.chat_template")
        if template:
            eos, bos = model.token_eos(), model.token_bos()
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
            tokens = self.model.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
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
        """Refuse new jobs, let the running and waiting ones finish, stop the scheduler, free the context and model."""
        import llama_cpp

        with self._closing, self._ready:
            self._closed = True
            self._waiting.append(None)
            self._ready.notify()
        self.thread.join()
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        self.model.close()

    def _drop_cancelled(self) -> None:
        """Forget waiting jobs whose clients have gone, so they do not hold places in the queue."""
        for job in [job for job in self._waiting if job is not None and job.cancelled.is_set()]:
            self._waiting.remove(job)
            self.cancelled_requests += 1
            job.events.put(("done", None))

    def _work(self) -> None:
        while True:
            try:
                with self._ready:
                    while not self._live and not self._waiting:
                        self._ready.wait()
                    while self._free and self._waiting and self._waiting[0] is not None:
                        self._admit(self._waiting.popleft())
                    if not self._live and self._waiting and self._waiting[0] is None:
                        return  # every job before the close marker has finished
                self._step()
            except Exception as exc:  # fail the live sequences, keep serving the next jobs
                log.exception("generation failed on model %s", self.record.id)
                for sequence in list(self._live):
                    self._retire(sequence, "error", ServerError(f"Generation failed: {exc}", code="generation_failed"))

    def _admit(self, job: Job) -> None:
        if job.cancelled.is_set():
            self.cancelled_requests += 1
            job.events.put(("done", None))
            return
        try:
            sampler = self._sampler(job.sampling)
        except Exception as exc:
            log.exception("bad sampling parameters on model %s", self.record.id)
            job.events.put(("error", ServerError(f"Generation failed: {exc}", code="generation_failed")))
            return
        self._seat(job, sampler)

    def _seat(self, job: Job, sampler) -> None:
        """Put the job in a free slot: one that cached exactly its prompt if any (then sample its first token from the
        cached logits), else one whose cells are cleared for a prefill."""
        import llama_cpp
        from llama_cpp._internals import LlamaTokenDataArray

        seq_id = next((i for i, (tokens, _) in self._free.items() if tokens == job.prompt_tokens), next(iter(self._free)))
        tokens, logits = self._free.pop(seq_id)
        sequence = Sequence(job, seq_id, sampler)
        self._live.append(sequence)
        if tokens != job.prompt_tokens:
            llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
            return
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, len(tokens), -1)  # drop the last answer, keep the prompt
        sequence.unread, sequence.position, sequence.prompt_logits = [], len(tokens), logits
        candidates = LlamaTokenDataArray(n_vocab=self.n_vocab)
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(candidates.candidates))
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        llama_cpp.llama_sampler_accept(sampler.sampler, token)
        self._take(sequence, token)

    def _sampler(self, sampling: Sampling):
        """The sequence's own chain, as llama_cpp.Llama builds it: penalties, grammar, then greedy or top-k/p + seeded dist."""
        import llama_cpp
        from llama_cpp._internals import LlamaSampler
        from llama_cpp.llama_grammar import LlamaGrammar

        chain = LlamaSampler()
        chain.add_penalties(self.n_vocab, PENALTY_LAST_N, 1.0, sampling.frequency_penalty, sampling.presence_penalty)
        if sampling.grammar:
            grammar = LlamaGrammar.from_string(sampling.grammar, verbose=False)
            sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, grammar._grammar.encode(), grammar._root.encode())
            if not sampler:
                chain.close()
                raise ValueError("the grammar could not be parsed")
            llama_cpp.llama_sampler_chain_add(chain.sampler, sampler)
        if sampling.temperature == 0:
            chain.add_greedy()
        else:
            chain.add_top_k(sampling.top_k)
            chain.add_top_p(sampling.top_p, 1)
            chain.add_min_p(sampling.min_p, 1)
            chain.add_temp(sampling.temperature)
            chain.add_dist(sampling.seed & 0xFFFFFFFF if sampling.seed is not None else random.getrandbits(32))
        return chain

    def _step(self) -> None:
        """One decode: every generating sequence's next token, then prompt chunks with what room is left."""
        import llama_cpp

        for sequence in [s for s in self._live if s.job.cancelled.is_set()]:
            self._retire(sequence, None)
        batch, count = self.batch, 0

        def add(sequence: Sequence, token: int, logits: bool) -> None:
            nonlocal count
            batch.token[count], batch.pos[count] = token, sequence.position
            batch.n_seq_id[count], batch.seq_id[count][0], batch.logits[count] = 1, sequence.seq_id, logits
            if logits:
                sequence.logits_index = count
            sequence.position += 1
            count += 1

        sampling = []
        for sequence in self._live:
            if sequence.next_token is not None:
                add(sequence, sequence.next_token, True)
                sequence.next_token = None
                sampling.append(sequence)
        for sequence in self._live:
            room = self.n_batch - count
            if not sequence.unread or room == 0:
                continue
            chunk, sequence.unread = sequence.unread[:room], sequence.unread[room:]
            for index, token in enumerate(chunk):
                add(sequence, token, not sequence.unread and index == len(chunk) - 1)
            if not sequence.unread:
                sampling.append(sequence)
        if not count:
            return
        batch.n_tokens = count
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for sequence in sampling:
            if sequence.prompt_logits is None:
                sequence.prompt_logits = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(self.ctx, sequence.logits_index), shape=(self.n_vocab,)
                ).copy()
            token = llama_cpp.llama_sampler_sample(sequence.sampler.sampler, self.ctx, sequence.logits_index)
            self._take(sequence, token)

    def _take(self, sequence: Sequence, token: int) -> None:
        """Deliver one sampled token's text, or finish the sequence (end of generation, stop string, length)."""
        import llama_cpp

        job = sequence.job
        if job.cancelled.is_set():
            return self._retire(sequence, None)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            return self._retire(sequence, "stop")
        job.completion_tokens += 1
        self.generated_tokens += 1
        text, stopped = sequence.stops.feed(sequence.decoder.decode(self._piece(token)))
        if text:
            job.events.put(("delta", text))
        if stopped:
            return self._retire(sequence, "stop")
        if job.completion_tokens >= job.sampling.max_tokens:
            return self._retire(sequence, "length")
        sequence.next_token = token

    def _retire(self, sequence: Sequence, finish: str | None, error: Exception | None = None) -> None:
        """Free the slot (its prompt's cells and logits stay as a cache); tell the job how it ended."""
        self._live.remove(sequence)
        cached = sequence.prompt_logits is not None and error is None
        self._free[sequence.seq_id] = (sequence.job.prompt_tokens, sequence.prompt_logits) if cached else ([], None)
        sequence.sampler.close()
        events = sequence.job.events
        if error is not None:
            events.put(("error", error))
            return
        if finish is None:
            with self._ready:  # a request thread counts the waiting jobs it drops (_drop_cancelled) under this lock
                self.cancelled_requests += 1
        else:
            self.completed_requests += 1
            tail = sequence.stops.flush() + sequence.decoder.decode(b"", final=True)
            if tail:
                events.put(("delta", tail))
        events.put(("done", finish))

    def _piece(self, token: int) -> bytes:
        """The token's bytes (cached: the vocabulary never changes)."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            buffer = ctypes.create_string_buffer(64)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
            piece = self._pieces[token] = buffer.raw[:size]
        return piece
