"""Items as the Responses and Conversations APIs store them, from what clients send, and the chat messages a
context of items gives the model.

A client's message may be a bare string or an "easy" message ({role, content}) whose content is a string or
parts; stored, every message is a full item with an id, a status and typed parts: `input_text` for user,
system and developer messages, `output_text` for the assistant's. Function calls and their outputs are stored
as OpenAI's `function_call` / `function_call_output` items (a namespace's function: `namespace` beside its `name`),
a custom tool's as `custom_tool_call` / `custom_tool_call_output`; in the chat they become an assistant message's
`tool_calls` and `tool` messages (jan_server.models.tools writes them into the prompt); a `compaction` item
(jan_server.responses.compaction) becomes a system message holding its summary, and a `file_search_call` the
search function's call and results (jan_server.responses.file_search).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jan_server.errors import InvalidRequestError
from jan_server.responses import file_search
from jan_server.storage.records import new_id

#: What heads a compaction's summary in the chat (see jan_server.responses.compaction).
COMPACTED = "Summary of the conversation so far:"
#: The field holding what the model wrote, by call item type.
CALL_TEXT = {"function_call": "arguments", "custom_tool_call": "input"}
#: The output item type answering each call item type.
OUTPUTS = {"function_call_output": "function_call", "custom_tool_call_output": "custom_tool_call"}


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message(role: str, text: str, item_id: str | None = None, status: str = "completed") -> dict:
    part = output_text(text) if role == "assistant" else {"type": "input_text", "text": text}
    return {"id": item_id or new_id("msg_"), "type": "message", "role": role, "status": status, "content": [part]}


def function_call(call_id: str, name: str, arguments: str, item_id: str | None = None, status: str = "completed", namespace: str | None = None) -> dict:
    item = {"id": item_id or new_id("fc_"), "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": status}
    return {**item, "namespace": namespace} if namespace else item


def qualified(name: str, namespace: str | None) -> str:
    """The name the model calls a tool by: a namespace's function or custom tool as `<namespace>.<name>`."""
    return f"{namespace}.{name}" if namespace else name


def custom_tool_call(call_id: str, name: str, input: str, status: str = "completed", namespace: str | None = None) -> dict:
    item = {"id": new_id("ctc_"), "type": "custom_tool_call", "call_id": call_id, "name": name, "input": input, "status": status}
    return {**item, "namespace": namespace} if namespace else item


def function_call_output(call_id: str, output: str, kind: str = "function_call_output") -> dict:
    return {"id": new_id("fco_" if kind == "function_call_output" else "ctco_"), "type": kind, "call_id": call_id, "output": output, "status": "completed"}


def compaction(summary: str) -> dict:
    return {"id": new_id("cmp_"), "type": "compaction", "encrypted_content": summary}


def input_items(given: str | Iterable[Mapping], field: str = "input", model: str | None = None) -> list[dict]:
    """The stored items for a request's `input` (or a conversation's `items`: `field`), each with a new id; a 400
    for an image (see check_text_only)."""
    if isinstance(given, str):
        return [message("user", given)]
    check_text_only(given, field, model)
    return [_stored(item) for item in given]


def check_text_only(given: Iterable[Mapping], field: str, model: str | None) -> None:
    """A 400 naming the first image part of `given`: the server's models read text only."""
    reader = f"The model '{model}' cannot read images: it reads" if model else "Images cannot be read: this server's models read"
    for at, item in enumerate(given):
        content = item.get("content")
        for part_at, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") == "input_image":
                raise InvalidRequestError(
                    f"{reader} text only ({field}[{at}].content[{part_at}] is an input_image).",
                    param=f"{field}[{at}].content[{part_at}]",
                    code="image_input_unsupported",
                )


def _stored(item: Mapping) -> dict:
    kind = item.get("type", "message")
    if kind == "function_call":
        return function_call(item["call_id"], item["name"], item["arguments"], namespace=item.get("namespace"))
    if kind == "custom_tool_call":
        return custom_tool_call(item["call_id"], item["name"], item["input"], namespace=item.get("namespace"))
    if kind in OUTPUTS:
        return function_call_output(item["call_id"], text_of(item["output"]), kind)
    if kind == "compaction":
        return compaction(item["encrypted_content"])
    if kind == file_search.KIND:
        return file_search.stored(item)
    return message(item["role"], text_of(item["content"]))


def text_of(content: str | Iterable[Mapping]) -> str:
    """A message's text: the string, or its text parts joined in order."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content)


def check_call_outputs(items: Iterable[Mapping]) -> None:
    """Every function_call_output (custom_tool_call_output) answers a function_call (custom_tool_call) earlier in
    the context (400 otherwise)."""
    calls = set()
    for item in items:
        if item["type"] in CALL_TEXT:
            calls.add((item["type"], item["call_id"]))
        elif item["type"] in OUTPUTS and (OUTPUTS[item["type"]], item["call_id"]) not in calls:
            raise InvalidRequestError(f"No {OUTPUTS[item['type']]} found for the {item['type']} with call_id '{item['call_id']}'.", param="input", code="call_not_found")


def chat_messages(items: Iterable[Mapping]) -> list[dict]:
    """The chat template's messages for a context of stored items (`developer` is the template's `system`);
    consecutive calls make one assistant message with several `tool_calls` (a namespace's named as offered)."""
    messages: list[dict] = []
    for item in items:
        if item["type"] in CALL_TEXT:
            name = qualified(item["name"], item.get("namespace"))
            if item["type"] == "function_call":
                call = {"id": item["call_id"], "type": "function", "function": {"name": name, "arguments": item["arguments"]}}
            else:
                call = {"id": item["call_id"], "type": "custom", "custom": {"name": name, "input": item["input"]}}
            if messages and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item["type"] in OUTPUTS:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        elif item["type"] == file_search.KIND:
            messages += file_search.chat_messages(item)
        elif item["type"] == "compaction":
            messages.append({"role": "system", "content": f"{COMPACTED}\n{item['encrypted_content']}"})
        else:
            messages.append({"role": "system" if item["role"] == "developer" else item["role"], "content": text_of(item["content"])})
    return messages
