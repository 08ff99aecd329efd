"""OpenAI chat completions: request -> engine parameters, and the engine's output -> `chat.completion`
objects or a Server-Sent Events stream of `chat.completion.chunk` objects.

The spec has already validated types and ranges; this module maps what is left.
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from jan_server.web import sse
from jan_server.models.batching import Job
from jan_server.models.grammar import grammar_of
from jan_server.errors import ApiError

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


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(job: Job, text: str, model: str) -> dict:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": job.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": job.usage,
    }


def stream(job: Job, model: str, include_usage: bool = False) -> Iterator[bytes]:
    """The SSE body: role, content deltas, finish_reason, optional usage, [DONE]; a late error as an `error` event."""
    head = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
        return sse.event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    try:
        for text in job:
            yield chunk({"content": text})
    except ApiError as exc:
        yield sse.event(exc.to_dict(), "error")
        yield DONE
        return
    if job.finish_reason is None:  # cancelled: the client is gone
        return
    yield chunk({}, job.finish_reason)
    if include_usage:
        yield sse.event({**head, "choices": [], "usage": job.usage})
    yield DONE
