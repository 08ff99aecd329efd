"""Items as the Responses and Conversations APIs store them, from what clients send, and the chat messages a
context of items gives the model.

A client's message may be a bare string or an "easy" message ({role, content}) whose content is a string or
parts; stored, every message is a full item with an id, a status and typed parts: `input_text` for user,
system and developer messages, `output_text` for the assistant's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jan_server.storage.records import new_id


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message(role: str, text: str, item_id: str | None = None, status: str = "completed") -> dict:
    part = output_text(text) if role == "assistant" else {"type": "input_text", "text": text}
    return {"id": item_id or new_id("msg_"), "type": "message", "role": role, "status": status, "content": [part]}


def input_items(given: str | Iterable[Mapping]) -> list[dict]:
    """The stored items for a request's `input` (or a conversation's `items`), each with a new id."""
    if isinstance(given, str):
        return [message("user", given)]
    return [message(item["role"], text_of(item["content"])) for item in given]


def text_of(content: str | Iterable[Mapping]) -> str:
    """A message's text: the string, or its text parts joined in order."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content)


def chat_messages(items: Iterable[Mapping]) -> list[dict]:
    """The chat template's messages for a context of stored items (`developer` is the template's `system`)."""
    return [
        {"role": "system" if item["role"] == "developer" else item["role"], "content": text_of(item["content"])}
        for item in items
        if item.get("type") == "message"
    ]
