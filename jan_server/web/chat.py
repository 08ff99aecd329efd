"""OpenAI chat completions: request -> engine parameters, and the engine's output -> `chat.completion`
objects, with tool calls (function and custom tools) and logprobs (jan_server.web.chat_stream streams them).

The spec has already validated types and ranges (and refused the fields the engine does not honour); this module
checks what spans fields and maps the rest.
"""

from __future__ import annotations

import time
import uuid
from typing import NamedTuple

from jan_server.models import jobs as choices_of
from jan_server.models import tools
from jan_server.models.batching import Job
from jan_server.models.grammar import grammar_of
from jan_server.models.jobs import TokenLogprob, route
from jan_server.errors import InvalidRequestError

DONE = b"data: [DONE]\n\n"


class ChatRequest(NamedTuple):
    messages: list[dict]
    parameters: dict
    plan: tools.ToolPlan | None


def request_of(body: dict) -> ChatRequest:
    """The messages, generation parameters and tool plan of a request body."""
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise InvalidRequestError("`tool_choice` is only allowed when `tools` are given.", param="tool_choice")
    plan = tools.plan(engine_tools(body.get("tools")), body.get("tool_choice"), body.get("parallel_tool_calls"))
    if plan and (body.get("response_format") or {}).get("type", "text") != "text":
        raise InvalidRequestError("`response_format` cannot be combined with tool calls; give `tool_choice: none`.", param="response_format")
    parameters = parameters_of(body)
    if plan:
        parameters.update(plan.parameters())
    return ChatRequest(messages_of(body), parameters, plan)


def engine_tools(given: list[dict] | None) -> list[dict] | None:
    """The tools as the engine takes them: a custom tool's grammar format flat (`{"type": "grammar", "syntax",
    "definition"}`, as Responses gives it), so either API offers a tool the same way."""
    return [flat_format(tool) if tool["type"] == "custom" else tool for tool in given or ()] or None


def flat_format(tool: dict) -> dict:
    custom = tool["custom"]
    form = custom.get("format") or {}
    return tool if form.get("type") != "grammar" else {"type": "custom", "custom": {**custom, "format": {"type": "grammar", **form["grammar"]}}}


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


def tool_call(call: tools.ToolCall, customs: set[str]) -> dict:
    """OpenAI's function tool call, or a custom tool's (`customs`: their names) with the call's text as `input`."""
    if call.name in customs:
        return {"id": call.id, "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def finish_reason(job: Job, called: bool) -> str | None:
    return "tool_calls" if called and job.finish_reason == "stop" else job.finish_reason


def choice(index: int, job: Job, text: str, plan: tools.ToolPlan | None) -> dict:
    message = {"role": "assistant", "content": text, "refusal": None}
    calls = []
    if plan:
        message["content"], calls = tools.parse(text)
        if calls:
            message["tool_calls"] = [tool_call(call, plan.customs) for call in calls]
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
