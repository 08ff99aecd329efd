"""A chat completion streamed: Server-Sent Events of `chat.completion.chunk` objects, with content, tool call
(function and custom) and logprobs deltas as the engine writes them.

OpenAI's published spec has only function calls in a chunk; a custom tool's call streams as OpenAI sends it: its
first chunk `{"index", "id", "type": "custom", "custom": {"name", "input": ""}}`, then `{"index", "custom":
{"input": fragment}}` (openai/openai-openapi#576)."""

from __future__ import annotations

import time
from typing import Iterator

from jan_server.errors import ApiError
from jan_server.models import jobs as choices_of
from jan_server.models import tools
from jan_server.models.batching import Job
from jan_server.web import sse
from jan_server.web.chat import DONE, completion_id, finish_reason, logprobs_block


class CallDeltas:
    """One choice's deltas from the model's text (ToolCallParser's events): content, then calls."""

    def __init__(self, plan: tools.ToolPlan):
        self.parser = tools.ToolCallParser()
        self.customs = plan.customs
        self.kinds: dict[int, str] = {}  # each call's type, by index

    def feed(self, text: str) -> Iterator[dict]:
        return self._deltas(self.parser.feed(text))

    def close(self) -> Iterator[dict]:
        return self._deltas(self.parser.close())

    def _deltas(self, events: Iterator[tuple]) -> Iterator[dict]:
        for event in events:
            if event[0] == "content":
                yield {"content": event[1]}
            elif event[0] == "call":
                _, index, call_id, name = event
                kind = self.kinds[index] = "custom" if name in self.customs else "function"
                yield {"tool_calls": [{"index": index, "id": call_id, "type": kind, kind: {"name": name, text_field(kind): ""}}]}
            else:
                kind = self.kinds[event[1]]
                yield {"tool_calls": [{"index": event[1], kind: {text_field(kind): event[2]}}]}


def text_field(kind: str) -> str:
    """Where a call of `kind` carries what the model wrote."""
    return "input" if kind == "custom" else "arguments"


def stream(jobs: list[Job], model: str, include_usage: bool = False, plan: tools.ToolPlan | None = None) -> Iterator[bytes]:
    """The SSE body: each choice's role, then content (or tool call) deltas (each chunk one choice's, with its
    `index`) and finish_reason as they come, optional usage, [DONE]; a late error as an `error` event. Each token's
    logprobs ride on the first chunk that carries text of it (the rest on the last)."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None
    calls = [CallDeltas(plan) if plan else None for _ in jobs]
    sent = [0] * len(jobs)  # each job's logprobs entries already sent

    def chunk(index: int, delta: dict, finish: str | None = None) -> bytes:
        job = jobs[index]
        logprobs = logprobs_block(job, job.logprobs[sent[index]:])
        sent[index] = len(job.logprobs)
        return sse.event({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]})

    def ending(index: int) -> Iterator[bytes]:
        deltas = calls[index]
        for delta in deltas.close() if deltas else []:
            yield chunk(index, delta)
        yield chunk(index, {}, finish_reason(jobs[index], bool(deltas and deltas.parser.calls)))

    for index in range(len(jobs)):
        yield chunk(index, {"role": "assistant", "content": None if plan else "", "refusal": None})
    finished: set[int] = set()
    try:
        for index, text in choices_of.choices(jobs):
            for done in _newly_finished(jobs, finished):
                yield from ending(done)
            deltas = calls[index]
            for delta in deltas.feed(text) if deltas else [{"content": text}]:
                yield chunk(index, delta)
    except ApiError as exc:
        yield sse.event(exc.to_dict(), "error")
        yield DONE
        return
    if any(job.finish_reason is None for job in jobs):  # cancelled: the client is gone
        return
    for done in _newly_finished(jobs, finished):
        yield from ending(done)
    if include_usage:
        yield sse.event({**head, "choices": [], "usage": choices_of.usage(jobs)})
    yield DONE


def _newly_finished(jobs: list[Job], finished: set[int]) -> list[int]:
    """The indexes of choices that ended since the last call (each is added to `finished`)."""
    done = [index for index, job in enumerate(jobs) if job.finish_reason is not None and index not in finished]
    finished.update(done)
    return done
