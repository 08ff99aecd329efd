"""Anthropic's Messages API as a translation of chat completions: a request becomes the chat request (messages,
generation parameters, tool plan) that chat completions run on the same engine, and the engine's output becomes
Anthropic's `message` object (jan_server.web.anthropic_stream streams it as Anthropic's events).

The spec has already refused what the server cannot do that a schema can say (server tools, `thinking` enabled,
MCP servers, containers); this module refuses the blocks a text model cannot read.
"""

from __future__ import annotations

import json
import uuid

from jan_server.errors import InvalidRequestError
from jan_server.models import tools
from jan_server.models.grammar import grammar_of
from jan_server.models.batching import Job
from jan_server.web import chat
from jan_server.web.anthropic_route import route_of

#: Blocks of a turn that are dropped: earlier thinking, which Anthropic drops from earlier turns too.
DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def request_of(body: dict) -> chat.ChatRequest:
    """The chat request of a Messages request (`top_k`, which chat completions lack, added; `output_config.format`
    as a JSON-schema grammar, as chat's `response_format`; the route its user id and first cache marker give)."""
    asked = chat.request_of(chat_body(body))
    if body.get("top_k") is not None:
        asked.parameters["top_k"] = body["top_k"]
    if named := route_of(body):
        asked.parameters["route"] = named
    form = (body.get("output_config") or {}).get("format")
    if form:
        if asked.plan:
            raise InvalidRequestError("Structured output cannot be combined with tool calls; give `tool_choice: none`.", param="output_config.format")
        asked.parameters["grammar"] = grammar_of({"type": "json_schema", "json_schema": {"schema": form["schema"]}}, "output_config.format.schema")
    return asked


def chat_body(body: dict) -> dict:
    """The chat completion request that asks the same: the system prompt first, each turn's text, tool calls and
    tool results as chat messages, the tools as functions."""
    messages = [{"role": "system", "content": text_of(body["system"])}] if body.get("system") else []
    for index, message in enumerate(body["messages"]):
        messages += turn(message, f"messages.{index}")
    given = {
        "model": body["model"],
        "messages": messages,
        "max_completion_tokens": body.get("max_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": body.get("stop_sequences") or None,
    }
    if body.get("tools"):
        given["tools"] = [function_tool(tool) for tool in body["tools"]]
        given.update(tool_choice(body.get("tool_choice") or {"type": "auto"}))
    return {key: value for key, value in given.items() if value is not None}


def text_of(content: str | list[dict]) -> str:
    return content if isinstance(content, str) else "\n".join(block["text"] for block in content)


def turn(message: dict, path: str) -> list[dict]:
    """A user turn as a user message (its text blocks joined) and a tool message per `tool_result`, in order; an
    assistant turn as one message with its text and tool calls; a system turn as a system message."""
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    out: list[dict] = []
    texts: list[str] = []
    calls = []
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = json.dumps(block["input"], ensure_ascii=False)
            calls.append({"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}})
        elif kind == "tool_result":
            if texts:
                out.append({"role": "user", "content": "\n".join(texts)})
                texts = []
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": tool_output(block, f"{path}.content.{index}")})
        elif kind not in DROPPED_BLOCKS:
            refuse_block(kind, f"{path}.content.{index}")
    if role != "user":
        return [{"role": role, "content": "\n".join(texts), **({"tool_calls": calls} if calls else {})}]
    if texts or not out:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def tool_output(block: dict, path: str) -> str:
    content = block.get("content") or ""
    if isinstance(content, list):
        for index, part in enumerate(content):
            if part["type"] != "text":
                refuse_block(part["type"], f"{path}.content.{index}")
        content = text_of(content)
    return f"Error: {content}" if block.get("is_error") else content


def refuse_block(kind: str, path: str):
    raise InvalidRequestError(
        f"{kind} blocks are not supported: this server runs text-only models and no server tools.", param=f"{path}.type"
    )


def function_tool(tool: dict) -> dict:
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def tool_choice(choice: dict) -> dict:
    """Anthropic's tool_choice as chat's `tool_choice` and `parallel_tool_calls`."""
    kind = choice["type"]
    if kind == "tool":
        if not choice.get("name"):
            raise InvalidRequestError("A tool_choice of type `tool` names the tool.", param="tool_choice.name")
        named = {"type": "function", "function": {"name": choice["name"]}}
    else:
        named = {"auto": "auto", "any": "required", "none": "none"}[kind]
    return {"tool_choice": named, "parallel_tool_calls": not choice.get("disable_parallel_tool_use", False)}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def tool_use_id(call: tools.ToolCall) -> str:
    return "toolu_" + call.id.removeprefix("call_")


def text_block(text: str) -> dict:
    return {"type": "text", "text": text, "citations": None}


def tool_use_block(call: tools.ToolCall) -> dict:
    return {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": tool_input(call.arguments)}


def tool_input(arguments: str) -> dict:
    """A call's input. A call cut by max_tokens has the input written so far: its open string and containers
    closed, or, where even that does not parse (a key cut short), none: `{}`."""
    try:
        return json.loads(arguments)
    except ValueError:
        pass
    closers, in_string, escaped = [], False, False
    for char in arguments:
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (escaped or char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]" and closers:
            closers.pop()
    text = arguments[:-1] if escaped else arguments
    try:
        value = json.loads(text + ('"' if in_string else "") + "".join(reversed(closers)))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def content_of(text: str, plan: tools.ToolPlan | None) -> tuple[list[dict], bool]:
    """The answer's content blocks (whitespace alone is no text block), and whether it called tools."""
    calls: list[tools.ToolCall] = []
    if plan:
        text, calls = tools.parse(text)
    blocks = [text_block(text)] if text and text.strip() else []
    return blocks + [tool_use_block(call) for call in calls], bool(calls)


def stop_reason(job: Job, called: bool, body: dict) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence of a finished job."""
    if job.finish_reason == "length":
        capped = job.sampling.max_tokens < body["max_tokens"]
        return ("model_context_window_exceeded" if capped else "max_tokens"), None
    if called:
        return "tool_use", None
    if job.stop_sequence is not None and job.stop_sequence in (body.get("stop_sequences") or ()):
        return "stop_sequence", job.stop_sequence
    return "end_turn", None


def usage(job: Job) -> dict:
    """Anthropic's usage: `input_tokens` are the prompt's tokens not reused from a slot's cache (those are
    `cache_read_input_tokens`), so their sum is the prompt, as count_tokens counts it."""
    return {
        "input_tokens": len(job.prompt_tokens) - job.cached_tokens,
        "output_tokens": job.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": job.cached_tokens,
    }


def message(job: Job, text: str, body: dict, plan: tools.ToolPlan | None) -> dict:
    """The `message` object of a finished job."""
    content, called = content_of(text, plan)
    reason, sequence = stop_reason(job, called, body)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": body["model"],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(job),
    }
