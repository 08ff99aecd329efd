"""Anthropic's conventions on its routes (/v1/messages, /v1/messages/count_tokens), as an ASGI middleware outside
the guards: every answer carries a `request-id` header, and every error, whoever raised it (the guards, request
validation, the handlers), is Anthropic's `{"type": "error", "error": {"type", "message"}}` with Anthropic's
status: the server's 503 (busy, stopping) is Anthropic's 529 `overloaded_error`."""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jan_server.web.spec_paths import API_BASE_PATH

PATHS = frozenset({f"{API_BASE_PATH}/messages", f"{API_BASE_PATH}/messages/count_tokens"})
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 529: "overloaded_error"}
STATUSES = {503: 529}


def error_object(status: int, error: dict) -> tuple[int, dict]:
    """Anthropic's status and error object for an error in OpenAI's shape answered with `status`."""
    status = STATUSES.get(status, status)
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": kind, "message": error_message(error)}


def error_message(error: dict) -> str:
    """The message of an error in OpenAI's shape, led by the field it names (as Anthropic's messages are); a prompt
    longer than the context says `prompt is too long`, which Claude Code reads to compact its conversation."""
    message = error.get("message") or "The request failed."
    if error.get("code") == "context_length_exceeded":
        return f"prompt is too long: {message}"
    param = error.get("param")
    return f"{param}: {message}" if param and not message.startswith(f"{param}:") else message


def anthropic_error(status: int, body: bytes, request_id: str) -> tuple[int, bytes]:
    """An error response's status and body, made Anthropic's."""
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    status, error = error_object(status, error)
    return status, json.dumps({"type": "error", "error": error, "request_id": request_id}).encode()


class AnthropicConventions:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") not in PATHS:
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        held: dict = {}  # an error's start, held until its body is read
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"request-id", request_id.encode())]
                if message["status"] < 400:
                    await send({**message, "headers": headers})
                else:
                    held.update(message, headers=headers)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = anthropic_error(held["status"], b"".join(chunks), request_id)
            headers = [(key, value) for key, value in held["headers"] if key.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**held, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, sending)
