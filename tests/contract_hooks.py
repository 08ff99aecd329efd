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
#: The most choices a generated chat request may ask for: the contract server's model runs the default 8
#: sequences (n_parallel, which the schema cannot know; more is a 400 on `n`).
MAX_CHOICES = 8
#: Nothing listens on the discard port: downloads there fail at once.
CLOSED_PORT = "127.0.0.1:9"
_MODELS_SPEC = yaml.safe_load((Path(__file__).parent.parent / "specs" / "models.yaml").read_text())
#: downloadModel's source_url rule, read from the spec.
SOURCE_URL = re.compile(_MODELS_SPEC["components"]["schemas"]["DownloadModelRequest"]["properties"]["source_url"]["pattern"])


@schemathesis.hook
def before_call(ctx, case, **kwargs) -> None:
    bounded(case)


def bounded(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.definition.raw.get("operationId") == "createChatCompletion":
        bounded_chat(body)
    url = body.get("source_url")
    if isinstance(url, str) and len(url) <= 4096 and SOURCE_URL.search(url):
        body["source_url"] = urlunsplit(urlsplit(url)._replace(netloc=CLOSED_PORT))


def bounded_chat(body: dict) -> None:
    """A few tokens out, at most the model's n_parallel choices, and a prompt that fits the model's context
    (neither is in the schema)."""
    n = body.get("n")
    if type(n) is int and MAX_CHOICES < n <= 64:
        body["n"] = MAX_CHOICES
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
