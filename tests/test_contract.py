"""Contract tests: schemathesis generates requests for every operation of the server's own served spec
(`/v1/openapi.json`) and checks each response against it: no 5xx, only declared status codes and content
types, bodies that match the schemas, and invalid input rejected.

The run is bounded and reproducible: a fixed seed, deterministic generation, a few fuzzed examples per
operation. Chat requests keep a tiny token budget (inference is slow on CI), and download URLs are
pointed at a closed loopback port so nothing leaves the machine.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.live_server import LiveServer

SEED = 20240601
FUZZED_EXAMPLES = 10
#: The largest completion a generated chat request may ask for.
MAX_TOKENS = 4
#: A generated prompt's most messages, and characters per message.
MAX_MESSAGES = 4
MAX_CHARS = 256
#: Nothing listens on the discard port: downloads there fail at once.
CLOSED_PORT = "127.0.0.1:9"
#: downloadModel's source_url pattern (specs/models.yaml).
SOURCE_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]")

CONFIG = {
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": FUZZED_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
    "request-timeout": 120,
}


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory) -> LiveServer:
    live = LiveServer(tmp_path_factory.mktemp("contract") / "data").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def served_spec(contract_server):
    return schemathesis.openapi.from_url(f"{contract_server.api_url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG))


schema = schemathesis.pytest.from_fixture("served_spec")


def bounded(case) -> None:
    """Keep a generated request cheap and local without changing whether it is schema-valid: every value
    changed here stays within its schema's bounds, so negative cases stay negative."""
    for cursor in ("after", "before"):  # any string is schema-valid, but only ids the server listed are cursors (else 400)
        (case.query or {}).pop(cursor, None)
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.definition.raw.get("operationId") == "createChatCompletion":
        bounded_chat(body)
    url = body.get("source_url")
    if isinstance(url, str) and len(url) <= 4096 and SOURCE_URL.match(url):
        try:
            parts = urlsplit(url)._replace(netloc=CLOSED_PORT)
        except ValueError:  # a valid prefix, then no parsable URL: the server says 400, and so it stays
            return
        if not body.get("id"):  # the id then comes from the URL's file name, which must hold a letter or digit
            parts = parts._replace(path=parts.path.rstrip("/") + "/model.gguf")
        body["source_url"] = urlunsplit(parts)


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


@schema.parametrize()
def test_every_operation_honours_the_spec(case):
    bounded(case)
    # In OpenAPI 3.0 a text/event-stream `schema` is the whole body, a string; schemathesis 4 validates it
    # event by event (OpenAPI 3.2's itemSchema), so streamed answers are checked for status and media type
    # here, and their chunks in tests/test_chat.py and tests/test_downloads.py.
    streamed = isinstance(case.body, dict) and case.body.get("stream") is True
    case.call_and_validate(excluded_checks=[response_schema_conformance] if streamed else [])
