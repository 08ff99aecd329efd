"""Rules for what clients send (ids, metadata, message content) and the API objects built from stored rows."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from jan_server.errors import InvalidRequestError

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_MESSAGE_FILES = 10
#: Assistant fields a thread may override when it attaches the assistant.
OVERRIDABLE = {"name", "model", "instructions", "tools", "metadata"}


def new_id(prefix: str) -> str:
    """`thread_`, `msg_` or `asst_` and 24 random URL-safe characters."""
    return prefix + secrets.token_urlsafe(18)


def now() -> int:
    return int(time.time())


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 keys of ≤ 64 characters, string values of ≤ 512 characters."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidRequestError("metadata must be an object.", param="metadata")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidRequestError(f"metadata may hold at most {MAX_METADATA_KEYS} keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequestError(f"metadata keys may be at most {MAX_METADATA_KEY_CHARS} characters: '{key[:80]}'.", param="metadata")
        if not isinstance(value, str):
            raise InvalidRequestError(f"metadata values must be strings (key '{key}').", param="metadata")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequestError(f"metadata values may be at most {MAX_METADATA_VALUE_CHARS} characters (key '{key}').", param="metadata")
    return dict(metadata)


def message_role(role: str | None) -> str:
    if role not in ("user", "assistant"):
        raise InvalidRequestError("role must be 'user' or 'assistant'.", param="role")
    return role


def text_part(value: str) -> dict:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def message_content(content: str | list | None) -> list[dict]:
    """A string, or a list of parts {"type": "text", "text": "..."}, as OpenAI's stored content parts."""
    if isinstance(content, str):
        return [text_part(content)]
    if not isinstance(content, list) or not content:
        raise InvalidRequestError("content must be a string or a non-empty array of text parts.", param="content")
    if not all(isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content):
        raise InvalidRequestError("content parts must look like {'type': 'text', 'text': '...'}.", param="content")
    return [text_part(part["text"]) for part in content]


def message_file_ids(file_ids: list[str] | None) -> list[str]:
    ids = list(dict.fromkeys(file_ids or []))
    if len(ids) > MAX_MESSAGE_FILES:
        raise InvalidRequestError(f"A message may have at most {MAX_MESSAGE_FILES} file_ids.", param="file_ids")
    return ids


def attached_file_ids(message: Mapping) -> list[str]:
    """The files of a message: its file_ids, then files named by its attachments."""
    from_attachments = [a["file_id"] for a in message["attachments"] or [] if isinstance(a, Mapping) and a.get("file_id")]
    return list(dict.fromkeys([*message["file_ids"], *from_attachments]))


def assistant_models(model: str | None, models: list[dict] | None) -> tuple[str, list[dict]]:
    """OpenAI names one `model`, Jan a list `models: [{model_id}]` whose first is `model`; either fills in the other."""
    models = [m for m in models or [] if m.get("model_id")]
    model = model or (models[0]["model_id"] if models else None)
    if not model:
        raise InvalidRequestError("An assistant needs a model: give 'model' or 'models': [{'model_id': ...}].", param="model")
    return model, [{"model_id": model}, *(m for m in models if m["model_id"] != model)]


def check_overrides(overrides: Mapping | None) -> dict:
    """The fields a thread overrides for an attached assistant; a field left out or null keeps the assistant's."""
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise InvalidRequestError(f"A thread cannot override an assistant's {', '.join(unknown)}.", param=unknown[0])
    if "metadata" in overrides:
        check_metadata(overrides["metadata"])
    return overrides


def thread_assistant(assistant_id: str, overrides: Mapping) -> dict:
    """An attachment as the thread shows it: the assistant's id and the thread's overrides."""
    return {"assistant_id": assistant_id, **overrides}


def thread_object(row: Mapping, attached: list[dict]) -> dict:
    return {
        "id": row["id"],
        "object": "thread",
        "created_at": row["created_at"],
        "title": row["title"],
        "metadata": row["metadata"],
        "tool_resources": row["tool_resources"],
        "assistants": attached,
    }


def message_object(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "object": "thread.message",
        "created_at": row["created_at"],
        "thread_id": row["thread_id"],
        "status": "completed",
        "incomplete_details": None,
        "completed_at": row["created_at"],
        "incomplete_at": None,
        "role": row["role"],
        "content": row["content"],
        "assistant_id": row["assistant_id"],
        "run_id": row["run_id"],
        "attachments": row["attachments"] or [],
        "file_ids": row["file_ids"],
        "metadata": row["metadata"],
    }


def message_file_object(file_id: str, message: Mapping) -> dict:
    return {"id": file_id, "object": "thread.message.file", "created_at": message["created_at"], "message_id": message["id"]}


def assistant_object(row: Mapping, overrides: Mapping | None = None) -> dict:
    assistant = {
        "id": row["id"],
        "object": "assistant",
        "created_at": row["created_at"],
        "name": row["name"],
        "description": row["description"],
        "model": row["model"],
        "models": row["models"],
        "instructions": row["instructions"],
        "avatar": row["avatar"],
        "tools": row["tools"],
        "tool_resources": row["tool_resources"],
        "metadata": row["metadata"],
        "temperature": row["temperature"],
        "top_p": row["top_p"],
        "response_format": row["response_format"] or "auto",
    }
    if overrides and "model" in overrides:
        assistant["models"] = [{"model_id": overrides["model"]}]
    return {**assistant, **(overrides or {})}


def deleted_object(object_id: str, kind: str) -> dict:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


def list_object(data: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
