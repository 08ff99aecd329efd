"""What the model service tells its observers (the web layer's metrics) about generation: the prompt tokens of
each request it accepted, and when each generated token came. The domain calls observers; it imports nothing of
Prometheus or the web."""

from __future__ import annotations

import time
from typing import Protocol

from jan_server.models.jobs import Job


class UsageObserver(Protocol):
    def prompt(self, model_id: str, tokens: int) -> None:
        """A request with `tokens` prompt tokens was accepted into the model's queue."""

    def token(self, model_id: str, seconds: float, first: bool) -> None:
        """A token was generated, `seconds` after its request was accepted (`first`) or after its previous token."""


class Usage:
    """The observers of one model service: every event goes to each of them (on the thread that made it)."""

    def __init__(self) -> None:
        self.observers: list[UsageObserver] = []

    def watch(self, model_id: str, job: Job) -> None:
        """Time the job's tokens from now on (call just before it is submitted)."""
        if self.observers:
            job.on_token = TokenClock(model_id, self.observers)

    def accepted(self, model_id: str, job: Job) -> None:
        for observer in self.observers:
            observer.prompt(model_id, len(job.prompt_tokens))


class TokenClock:
    """A job's `on_token`: the time since its submission, then since its previous token, to every observer."""

    def __init__(self, model_id: str, observers: list[UsageObserver]):
        self.model_id = model_id
        self.observers = observers
        self.last = time.monotonic()
        self.first = True

    def __call__(self) -> None:
        now = time.monotonic()
        for observer in self.observers:
            observer.token(self.model_id, now - self.last, self.first)
        self.last, self.first = now, False
