"""Schemathesis hooks for tests/test_contract.py (loaded through SCHEMATHESIS_HOOKS=tests.contract_hooks).

They keep each generated request cheap and local without changing whether it is schema-valid: every value
changed here stays within its schema's bounds, so negative cases stay negative and positive ones positive.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import schemathesis
import yaml

#: The largest completion a generated chat request may ask for.
MAX_TOKENS = 4
#: A generated prompt's most messages, and characters per message.
MAX_MESSAGES = 4
MAX_CHARS = 256
#: Nothing listens on the discard port: downloads there fail at once.
CLOSED_PORT = "127.0.0.1:9"
_MODELS_SPEC = yaml.safe_load((Path(__file__).parent.parent / "specs" / "models.yaml").read_text())
#: The model generated responses use, and the rule of a model id, read from the spec.
BUNDLED_MODEL = "smollm2-135m-instruct"
MODEL_ID = re.compile(_MODELS_SPEC["components"]["schemas"]["ModelId"]["pattern"])
#: downloadModel's source_url rule, read from the spec.
SOURCE_URL = re.compile(_MODELS_SPEC["components"]["schemas"]["DownloadModelRequest"]["properties"]["source_url"]["pattern"])


@schemathesis.hook
def before_call(ctx, case, **kwargs) -> None:
    bounded(case)


def bounded(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    operation_id = case.operation.definition.raw.get("operationId")
    if operation_id == "createChatCompletion":
        bounded_chat(body)
    elif operation_id == "createResponse":
        bounded_response(body)
        plain_in_flows(case, body)
    elif operation_id in ("createConversation", "createConversationItems") and isinstance(body.get("items"), list):
        clipped_items(body["items"])
    url = body.get("source_url")
    if isinstance(url, str) and len(url) <= 4096 and SOURCE_URL.search(url):
        body["source_url"] = urlunsplit(urlsplit(url)._replace(netloc=CLOSED_PORT))


def bounded_response(body: dict) -> None:
    """A few tokens out, a short input, and the bundled model (any other well-formed id is only a 404), so that
    generated requests reach the responses they create."""
    value = body.get("max_output_tokens")
    if value is None or (type(value) is int and MAX_TOKENS < value <= 131072):
        body["max_output_tokens"] = MAX_TOKENS
    if isinstance(body.get("model"), str) and len(body["model"]) <= 128 and MODEL_ID.fullmatch(body["model"]):
        body["model"] = BUNDLED_MODEL
    for key in ("input", "instructions"):
        if isinstance(body.get(key), str) and len(body[key]) <= 1_000_000:
            body[key] = body[key][:MAX_CHARS]
    if isinstance(body.get("input"), list) and len(body["input"]) <= 1024:
        del body["input"][MAX_MESSAGES:]
        clipped_items(body["input"])


def clipped_items(items: list) -> None:
    """Each text of the items (a message's content or parts, a call's arguments or output) cut to MAX_CHARS where it
    is within its 1,000,000-character limit. Of the texts beyond it (a negative case), the first stays, cut to one
    character too many, and the others are cut short: the body stays invalid, and small enough to get its 400
    rather than the server's 413 for a body over 8 MiB."""
    kept = False

    def clip(text: str) -> str:
        nonlocal kept
        if len(text) <= 1_000_000 or kept:
            return text[:MAX_CHARS]
        kept = True
        return text[:1_000_001]

    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("content", "output", "arguments"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = clip(value)
            elif isinstance(value, list):
                for part in value:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = clip(part["text"])


def plain_in_flows(case, body: dict) -> None:
    """In the stateful phase, a schema-valid createResponse without the options whose cross-field rules make most
    generated values a 400 (function tools, function call items, JSON formats) and not streamed, so that its flows
    reach the operations on the response it creates. Positive cases only: what is dropped is optional (a string
    stands in for an input left without messages), so they stay valid."""
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode.is_negative or meta.phase.name != "stateful":
        return
    for key in ("tools", "tool_choice", "text", "stream"):
        body.pop(key, None)
    if body.get("store") is False and not body.get("background"):
        body.pop("store")
    if isinstance(body.get("input"), list):
        body["input"] = [item for item in body["input"] if isinstance(item, dict) and item.get("type", "message") == "message"] or "Hello"


def bounded_chat(body: dict) -> None:
    """A few tokens out, and a prompt that fits the model's context (its size is not in the schema)."""
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if type(value) is int and MAX_TOKENS < value <= 131072:
            body[key] = MAX_TOKENS
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) > 4096:
        return
    del messages[MAX_MESSAGES:]
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and len(content) <= 1_000_000:  # longer is a negative case: keep it
            message["content"] = content[:MAX_CHARS]
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = part["text"][:MAX_CHARS]
