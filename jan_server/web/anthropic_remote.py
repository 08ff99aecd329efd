"""A Messages request for a remote model: asked of its upstream as the chat completion that asks the same
(jan_server.web.anthropic.chat_body), whose answer becomes Anthropic's `message`. The upstream is asked for the
whole answer at once; a streamed request gets it as Anthropic's events once it came (each block in one delta)."""

from __future__ import annotations

import json
from typing import Iterator

from jan_server.errors import BadGatewayError, InvalidRequestError
from jan_server.models.remote import Upstream
from jan_server.web import anthropic
from jan_server.web.anthropic_stream import event

STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def answer(upstream: Upstream, body: dict) -> dict:
    """The `message` object of the upstream's chat completion."""
    if body.get("top_k") is not None:
        raise InvalidRequestError("top_k is not part of the OpenAI API a remote model's upstream speaks.", param="top_k")
    asked = {**anthropic.chat_body(body), "stream": False}
    form = (body.get("output_config") or {}).get("format")
    if form:
        asked["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": form["schema"]}}
    completion = upstream.post("chat/completions", asked)
    try:
        return message(completion, body)
    except (KeyError, IndexError, TypeError, ValueError):
        raise BadGatewayError(f"The upstream of model '{body['model']}' answered with something that is not a chat completion.",
                              code="upstream_error") from None


def message(completion: dict, body: dict) -> dict:
    choice = completion["choices"][0]
    said = choice["message"]
    content = [anthropic.text_block(said["content"])] if (said.get("content") or "").strip() else []
    calls = said.get("tool_calls") or []
    content += [{"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"), "name": call["function"]["name"],
                 "input": json.loads(call["function"]["arguments"] or "{}")} for call in calls]
    reason = STOP_REASONS.get(choice.get("finish_reason"), "tool_use" if calls else "end_turn")
    usage = completion.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "id": anthropic.message_id(),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": body["model"],
        "stop_reason": reason,
        "stop_sequence": None,  # the upstream does not say which of the stop sequences ended it
        "usage": {"input_tokens": usage.get("prompt_tokens", 0) - cached, "output_tokens": usage.get("completion_tokens", 0),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached},
    }


def replay(whole: dict) -> Iterator[bytes]:
    """A finished message as Anthropic's stream events."""
    usage = whole["usage"]
    yield event({"type": "message_start", "message": {**whole, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}})
    yield event({"type": "ping"})
    for index, block in enumerate(whole["content"]):
        if block["type"] == "text":
            start, delta = anthropic.text_block(""), {"type": "text_delta", "text": block["text"]}
        else:
            start, delta = {**block, "input": {}}, {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}
        yield event({"type": "content_block_start", "index": index, "content_block": start})
        yield event({"type": "content_block_delta", "index": index, "delta": delta})
        yield event({"type": "content_block_stop", "index": index})
    yield event({"type": "message_delta", "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None}, "usage": usage})
    yield event({"type": "message_stop"})
