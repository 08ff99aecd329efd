"""OpenAI chat completions: request -> engine parameters, and the engine's output -> `chat.completion`
objects or a Server-Sent Events stream of `chat.completion.chunk` objects, with tool calls and logprobs.

The spec has already validated types and ranges (and refused the fields the engine does not honour); this module
checks what spans fields and maps the rest.
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator, NamedTuple

from jan_server.web import sse
from jan_server.models import jobs as choices_of
from jan_server.models import tools
from jan_server.models.batching import Job
from jan_server.models.grammar import grammar_of
from jan_server.models.jobs import TokenLogprob, route
from jan_server.errors import ApiError, InvalidRequestError

DONE = b"data: [DONE]\n\n"


class ChatRequest(NamedTuple):
    messages: list[dict]
    parameters: dict
    plan: tools.ToolPlan | None


def request_of(body: dict) -> ChatRequest:
    """The messages, generation parameters and tool plan of a request body."""
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise InvalidRequestError("`tool_choice` is only allowed when `tools` are given.", param="tool_choice")
    plan = tools.plan(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"))
    if plan and (body.get("response_format") or {}).get("type", "text") != "text":
        raise InvalidRequestError("`response_format` cannot be combined with tool calls; give `tool_choice: none`.", param="response_format")
    parameters = parameters_of(body)
    if plan:
        parameters.update(plan.parameters())
    return ChatRequest(messages_of(body), parameters, plan)


def messages_of(body: dict) -> list[dict]:
    """Messages as the chat template expects them: role, plain-text content, and the tool fields."""
    messages = []
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        role = "system" if message["role"] == "developer" else message["role"]
        out = {"role": role, "content": content or ""}
        for key in ("tool_calls", "tool_call_id"):
            if message.get(key):
                out[key] = message[key]
        messages.append(out)
    return messages


def parameters_of(body: dict) -> dict:
    """The request's generation parameters (only those given; the model's own defaults fill the rest)."""
    given = {
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "presence_penalty": body.get("presence_penalty"),
        "frequency_penalty": body.get("frequency_penalty"),
        "seed": body.get("seed"),
        "stop": body.get("stop"),
        "grammar": grammar_of(body.get("response_format")),
        "logprobs": logprobs_of(body),
        "route": route("key", body.get("prompt_cache_key")),
    }
    return {name: value for name, value in given.items() if value is not None}


def logprobs_of(body: dict) -> int | None:
    """How many alternatives to report per token, or None for no logprobs (the spec refuses `top_logprobs`
    without `logprobs: true`)."""
    return (body.get("top_logprobs") or 0) if body.get("logprobs") else None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def token_logprob(entry: TokenLogprob) -> dict:
    """OpenAI's ChatCompletionTokenLogprob."""

    def one(token: bytes, logprob: float) -> dict:
        return {"token": token.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(token)}

    return {**one(entry.token, entry.logprob), "top_logprobs": [one(token, logprob) for token, logprob in entry.top]}


def logprobs_block(job: Job, entries: list[TokenLogprob]) -> dict | None:
    if job.sampling.logprobs is None:
        return None
    return {"content": [token_logprob(entry) for entry in entries], "refusal": None}


def tool_call(call: tools.ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def finish_reason(job: Job, called: bool) -> str | None:
    return "tool_calls" if called and job.finish_reason == "stop" else job.finish_reason


def choice(index: int, job: Job, text: str, plan: tools.ToolPlan | None) -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    calls = []
    if plan:
        message["content"], calls = tools.parse(text)
        if calls:
            message["tool_calls"] = [tool_call(call) for call in calls]
    return {"index": index, "message": message, "finish_reason": finish_reason(job, bool(calls)), "logprobs": logprobs_block(job, job.logprobs)}


def completion(jobs: list[Job], texts: list[str], model: str, plan: tools.ToolPlan | None = None) -> dict:
    """The `chat.completion` of a request's choices (Runner.submit_choices); usage counts every choice."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice(index, job, text, plan) for index, (job, text) in enumerate(zip(jobs, texts))],
        "usage": choices_of.usage(jobs),
    }


def deltas(events: Iterator[tuple]) -> Iterator[dict]:
    """The chunk deltas of a ToolCallParser's events."""
    for event in events:
        if event[0] == "content":
            yield {"content": event[1]}
        elif event[0] == "call":
            _, index, call_id, name = event
            yield {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}
        else:
            yield {"tool_calls": [{"index": event[1], "function": {"arguments": event[2]}}]}


def stream(jobs: list[Job], model: str, include_usage: bool = False, plan: tools.ToolPlan | None = None) -> Iterator[bytes]:
    """The SSE body: each choice's role, then content (or tool call) deltas (each chunk one choice's, with its
    `index`) and finish_reason as they come, optional usage, [DONE]; a late error as an `error` event. Each token's
    logprobs ride on the first chunk that carries text of it (the rest on the last)."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None
    parsers = [tools.ToolCallParser() if plan else None for _ in jobs]
    sent = [0] * len(jobs)  # each job's logprobs entries already sent

    def chunk(index: int, delta: dict, finish: str | None = None) -> bytes:
        job = jobs[index]
        logprobs = logprobs_block(job, job.logprobs[sent[index]:])
        sent[index] = len(job.logprobs)
        return sse.event({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]})

    def ending(index: int) -> Iterator[bytes]:
        parser = parsers[index]
        for delta in deltas(parser.close()) if parser else []:
            yield chunk(index, delta)
        yield chunk(index, {}, finish_reason(jobs[index], bool(parser and parser.calls)))

    for index in range(len(jobs)):
        yield chunk(index, {"role": "assistant", "content": None if plan else "", "refusal": None})
    finished: set[int] = set()
    try:
        for index, text in choices_of.choices(jobs):
            for done in _newly_finished(jobs, finished):
                yield from ending(done)
            parser = parsers[index]
            for delta in deltas(parser.feed(text)) if parser else [{"content": text}]:
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
