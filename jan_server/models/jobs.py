"""A chat generation as the scheduler sees it: its prompt tokens, its sampling parameters and the queue of events
the scheduler thread fills while the request thread reads it."""

from __future__ import annotations

import queue
import threading
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
    grammar_triggers: list[str] = field(default_factory=list)  # regexes: the grammar applies once one matches (lazy)
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
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    alive: Callable[[], bool] = field(default=lambda: True, repr=False)

    @property
    def usage(self) -> dict:
        prompt = len(self.prompt_tokens)
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens, "total_tokens": prompt + self.completion_tokens}

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        """The text deltas as they come; raises the job's ApiError if generation failed or the scheduler died."""
        while True:
            try:
                kind, value = self.events.get(timeout=LIVENESS_POLL)
            except queue.Empty:
                if self.alive():
                    continue
                if not self.events.empty():  # the thread's last words arrived just now
                    continue
                raise ServerError("The model's scheduler stopped without finishing this generation.", code="scheduler_failed") from None
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
