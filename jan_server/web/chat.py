"""OpenAI chat completions: request -> engine parameters, and the engine's output -> `chat.completion`
objects or a Server-Sent Events stream of `chat.completion.chunk` objects.

The spec has already validated types and ranges; this module maps what is left.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

from jan_server.web import sse
from jan_server.models import jobs as choices_of
from jan_server.models.batching import Job
from jan_server.errors import ApiError, InvalidRequestError

DONE = b"data: [DONE]\n\n"


def messages_of(body: dict) -> list[dict]:
    """Messages as the chat template expects them: role and plain-text content."""
    messages = []
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": content or ""})
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
    }
    return {name: value for name, value in given.items() if value is not None}


def grammar_of(response_format: dict | None) -> str | None:
    """GBNF that constrains the output to JSON (any object, or the given JSON schema)."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if schema is None:
        return JSON_GBNF
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors on schemas it cannot handle
        raise InvalidRequestError(
            f"Unsupported JSON schema: {exc}", param="response_format.json_schema.schema", code="invalid_json_schema"
        ) from None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(jobs: list[Job], texts: list[str], model: str) -> dict:
    """The `chat.completion` of a request's choices (Runner.submit_choices); usage counts every choice."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": job.finish_reason,
                "logprobs": None,
            }
            for index, (job, text) in enumerate(zip(jobs, texts))
        ],
        "usage": choices_of.usage(jobs),
    }


def stream(jobs: list[Job], model: str, include_usage: bool = False) -> Iterator[bytes]:
    """The SSE body: each choice's role, then content deltas (each chunk one choice's, with its `index`) and
    finish_reason as they come, optional usage, [DONE]; a late error as an `error` event."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None

    def chunk(index: int, delta: dict, finish_reason: str | None = None) -> bytes:
        return sse.event({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]})

    for index in range(len(jobs)):
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
    finished = set()
    try:
        for index, text in choices_of.choices(jobs):
            yield from (chunk(done, {}, jobs[done].finish_reason) for done in _newly_finished(jobs, finished))
            yield chunk(index, {"content": text})
    except ApiError as exc:
        yield sse.event(exc.to_dict(), "error")
        yield DONE
        return
    if any(job.finish_reason is None for job in jobs):  # cancelled: the client is gone
        return
    yield from (chunk(done, {}, jobs[done].finish_reason) for done in _newly_finished(jobs, finished))
    if include_usage:
        yield sse.event({**head, "choices": [], "usage": choices_of.usage(jobs)})
    yield DONE


def _newly_finished(jobs: list[Job], finished: set[int]) -> list[int]:
    """The indexes of choices that ended since the last call (each is added to `finished`)."""
    done = [index for index, job in enumerate(jobs) if job.finish_reason is not None and index not in finished]
    finished.update(done)
    return done
