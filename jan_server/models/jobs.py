"""A chat generation as the scheduler sees it: its prompt tokens, its sampling parameters and the queue of events
the scheduler thread fills while the request thread reads it; and the `n` choices of one request as a group of
jobs whose events share one queue (`choice_jobs`, read with `choices`)."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

from jan_server.errors import ServerError

#: Seconds a waiting job sleeps between checks that its scheduler thread still runs. The thread fails its jobs
#: itself when it stops; this check only keeps a reader from waiting forever if even that went wrong.
LIVENESS_POLL = 1.0


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
    grammar_triggers: list[str] = field(default_factory=list)  # words: the grammar applies from the first one written on (lazy)
    logprobs: int | None = None  # how many top alternatives to report per token; None: no logprobs at all

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
            grammar_triggers=list(parameters.get("grammar_triggers") or []),
            logprobs=parameters.get("logprobs"),
        )


class TokenLogprob(NamedTuple):
    """A generated token's log-probability and the `top` most likely tokens at its place (bytes, logprob)."""

    token: bytes
    logprob: float
    top: list[tuple[bytes, float]]


@dataclass
class Job:
    """One generation: the scheduler puts ("delta", text), then ("done", finish_reason) or ("error", ApiError);
    with `sampling.logprobs`, a ("logprob", TokenLogprob) before each token's text (collected in `logprobs`).

    `cancelled` is anything with `is_set()` (the chat handler puts its disconnect flag there); `alive` tells whether
    the scheduler thread still runs (set by the scheduler on submit)."""

    prompt_tokens: list[int]
    sampling: Sampling
    cancelled: threading.Event = field(default_factory=threading.Event)
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    completion_tokens: int = 0
    #: Whether the model promises a seed's text whatever runs beside it and whatever its cache holds (its
    #: `settings.deterministic`, or the server's --deterministic); set when the job is prepared.
    deterministic: bool = False
    #: Prompt tokens whose cells were reused (from a slot) rather than read; set by the scheduler when it seats the job.
    cached_tokens: int = 0
    #: The conversation the job continues and the name it leaves on its slot, as the client gave them
    #: (`prompt_cache_key`, a Responses `conversation` or `previous_response_id`, a Messages user id and cache
    #: marker: jan_server.models.slots).
    route: str | None = None
    label: str | None = None
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the stop string that ended it, if one did
    logprobs: list[TokenLogprob] = field(default_factory=list)
    alive: Callable[[], bool] = field(default=lambda: True, repr=False)
    #: Called by the scheduler thread for each generated token (jan_server.models.usage times them).
    on_token: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def exact(self) -> bool:
        """Whether the job's text must be a cold read's whatever the cache and the batch hold: a seed on a
        deterministic model (jan_server.models.slots). Otherwise a seed gives the same text for the same request
        on an idle server, and the job batches like any other."""
        return self.deterministic and self.sampling.seed is not None

    @property
    def usage(self) -> dict:
        return usage([self])

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        return self.deltas()

    def deltas(self, idle: float | None = None) -> Iterator[str]:
        """The text deltas as they come; raises the job's ApiError if generation failed or the scheduler died. With
        `idle`, an empty delta after each `idle` seconds without an event (a stream's keep-alive while a long prompt
        is read: agent clients give up on a stream that says nothing for a few minutes)."""
        while True:
            event = next_event(self.events, self.alive, idle)
            if event is None:
                yield ""
                continue
            kind, value = event
            if kind == "delta":
                yield value
            elif kind == "logprob":
                self.logprobs.append(value)
            elif kind == "done":
                self.finish_reason = value
                return
            else:
                raise value

    def result(self) -> str:
        return "".join(self)


def route(kind: str, name: str | None) -> str | None:
    """A job's `route` or `label` from what the client named (kind: `key`, `conversation`, `response`, `cache`)."""
    return None if name is None else f"{kind}:{name}"


def next_event(events: queue.SimpleQueue, alive: Callable[[], bool], idle: float | None = None):
    """The next event of a queue the scheduler fills; a 500 `scheduler_failed` if its thread ended without one.
    With `idle`, None once that many seconds passed without one."""
    deadline = None if idle is None else time.monotonic() + idle
    while True:
        wait = LIVENESS_POLL if deadline is None else min(LIVENESS_POLL, deadline - time.monotonic())
        if wait <= 0:
            return None
        try:
            return events.get(timeout=wait)
        except queue.Empty:
            if alive() or not events.empty():  # not empty: the thread's last words arrived just now
                continue
            raise ServerError("The model's scheduler stopped without finishing this generation.", code="scheduler_failed") from None


class ChoiceEvents:
    """The event queue of one choice of a group: it puts (choice index, event) on the group's shared queue."""

    def __init__(self, shared: queue.SimpleQueue, index: int):
        self.shared = shared
        self.index = index

    def put(self, event) -> None:
        self.shared.put((self.index, event))


def choice_jobs(job: Job, n: int) -> list[Job]:
    """`n` jobs for the choices of one request: the same prompt and cancel flag, choice i seeded `seed + i` (when a
    seed is given, so the same seed gives the same choices). One job stays itself: read it as usual."""
    if n == 1:
        return [job]
    shared: queue.SimpleQueue = queue.SimpleQueue()

    def choice(index: int) -> Job:
        seed = None if job.sampling.seed is None else job.sampling.seed + index
        sampling = dataclasses.replace(job.sampling, seed=seed, stop=list(job.sampling.stop))
        return dataclasses.replace(job, sampling=sampling, events=ChoiceEvents(shared, index), completion_tokens=0, cached_tokens=0, finish_reason=None, logprobs=[])

    return [choice(index) for index in range(n)]


def choices(jobs: list[Job]) -> Iterator[tuple[int, str]]:
    """The text deltas of a group's jobs (from `choice_jobs`) as (choice index, text), in the order they come,
    until every job ended; each job's `finish_reason` is set as it ends. The first failure is raised (and the
    other choices are cancelled)."""
    if len(jobs) == 1:
        yield from ((0, text) for text in jobs[0])
        return
    shared, running = jobs[0].events.shared, len(jobs)
    while running:
        index, (kind, value) = next_event(shared, jobs[0].alive)
        if kind == "delta":
            yield index, value
        elif kind == "logprob":
            jobs[index].logprobs.append(value)
        elif kind == "done":
            jobs[index].finish_reason = value
            running -= 1
        else:
            for job in jobs:
                job.cancel()
            raise value


def results(jobs: list[Job]) -> list[str]:
    """Each choice's whole text (see `choices`)."""
    texts = [""] * len(jobs)
    for index, text in choices(jobs):
        texts[index] += text
    return texts


def usage(jobs: list[Job]) -> dict:
    """The usage of a request's choices as OpenAI counts it: the prompt once (with how many of its tokens were
    reused rather than read), every choice's completion tokens."""
    prompt, completion = len(jobs[0].prompt_tokens), sum(job.completion_tokens for job in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": jobs[0].cached_tokens}}
