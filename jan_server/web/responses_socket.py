"""WebSocket mode of the Responses API (Open Responses, 2026-04-24): a WebSocket at /v1/responses on which the
client sends `{"type": "response.create", ...createResponse's body}` messages and gets each response's stream
events (jan_server.web.responses.events, the same as over HTTP) as JSON text messages, one response at a time.

Every response made on a socket is held, with its whole context, for the socket's life, so a `store: false`
response can be continued there with `previous_response_id`; a stored one is also found in the database. A
missing previous response is an error event with code `previous_response_not_found`, and a continuation that
fails drops the response it continued. Errors are `{"type": "error", "status", "error": {...}}` events; the
socket stays open. The API key guard checks the upgrade (jan_server.web.security)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Iterator

from connexion.exceptions import BadRequestProblem
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from jan_server.errors import ApiError, InvalidRequestError
from jan_server.responses.service import ResponseService
from jan_server.web import responses
from jan_server.web.dispatch import PreparedJSONBodyValidator
from jan_server.web.error_responses import param_from_detail
from jan_server.web.spec_paths import API_BASE_PATH

PATH = f"{API_BASE_PATH}/responses"
#: A socket's life, as Open Responses bounds it: a message after it gets `websocket_connection_limit_reached`.
LIFETIME_S = 60 * 60
#: HTTP-only fields a `response.create` must not carry.
HTTP_ONLY = ("stream", "stream_options", "background")
#: What the socket closes with when the client sends something that is not a text message.
UNSUPPORTED_DATA = 1003


def error_event(status: int, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"type": "error", "status": status, "error": {"type": kind, "code": code, "message": message, "param": param}}


class Session:
    """One socket's responses: what it holds for continuation, and each turn's events (run on a worker thread)."""

    def __init__(self, service: ResponseService, validator: PreparedJSONBodyValidator):
        self.service = service
        self.validator = validator
        self.held: dict[str, list[dict]] = {}  # response id -> the context a response continuing it starts from

    def turn(self, text: str) -> Iterator[dict]:
        previous = None
        try:
            body = self.checked(text)
            previous = body.get("previous_response_id")
            generation = self.service.create(body, held=self.held.get(previous))
            final = None
            for event in responses.events(generation):
                final = event
                yield event
            if final is not None and final["type"] in ("response.completed", "response.incomplete"):
                self.held[generation.id] = generation.chain
            elif previous:
                self.held.pop(previous, None)
        except ApiError as exc:
            if previous:
                self.held.pop(previous, None)
            code = exc.code or exc.type
            if code == "response_not_found" and exc.param == "previous_response_id":
                code = "previous_response_not_found"
            yield error_event(exc.status, exc.message, code, exc.param, exc.type)

    def checked(self, text: str) -> dict:
        """The create-response body of a `response.create` message, validated as createResponse's (400 otherwise)."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise InvalidRequestError("A WebSocket message must be a JSON object.", code="invalid_json") from None
        if not isinstance(message, dict) or message.get("type") != "response.create":
            raise InvalidRequestError("Send `{\"type\": \"response.create\", ...}`: the only message this socket takes.", param="type", code="invalid_value")
        body = {key: value for key, value in message.items() if key != "type"}
        for field in HTTP_ONLY:
            if body.get(field) is not None:
                raise InvalidRequestError(f"`{field}` is for HTTP: a WebSocket response always streams, in the foreground.", param=field, code="invalid_value")
        try:
            self.validator._validate(body)
        except BadRequestProblem as problem:
            detail = str(problem.detail).split("\n\n")[0]
            raise InvalidRequestError(detail, param=param_from_detail(detail), code="invalid_value") from None
        return body


class ResponsesSocket:
    """The ASGI middleware that answers WebSocket upgrades of /v1/responses; any other WebSocket goes on (to be refused)."""

    def __init__(self, app: ASGIApp, service: ResponseService, body_schema: dict):
        self.app = app
        self.service = service
        self.validator = PreparedJSONBodyValidator(schema=body_schema, required=True, nullable=False, encoding="utf-8", strict_validation=True, uri_parser=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"].rstrip("/") != PATH:
            await self.app(scope, receive, send)
            return
        socket = WebSocket(scope, receive, send)
        await socket.accept()
        session = Session(self.service, self.validator)
        ends = time.monotonic() + LIFETIME_S
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is None:
                    await socket.close(UNSUPPORTED_DATA)
                    return
                if time.monotonic() > ends:
                    limit = error_event(400, "This WebSocket reached its 60-minute limit: open a new one.", "websocket_connection_limit_reached")
                    await socket.send_text(json.dumps(limit))
                    await socket.close()
                    return
                await self.relay(socket, session.turn(message["text"]))

    @staticmethod
    async def relay(socket: WebSocket, events: Iterator[dict]) -> None:
        """Send a turn's events as they come, generated on a thread of the turn's own (generation blocks); a client
        that leaves meanwhile stops the generation at its next event (closing the events cancels it)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue = asyncio.Queue()
        left = threading.Event()

        def pump() -> None:
            try:
                for event in events:
                    loop.call_soon_threadsafe(ready.put_nowait, event)
                    if left.is_set():
                        break
            finally:
                events.close()
                loop.call_soon_threadsafe(ready.put_nowait, None)

        threading.Thread(target=pump, name="responses-socket", daemon=True).start()
        try:
            while (event := await ready.get()) is not None:
                await socket.send_text(json.dumps(event))
        finally:
            left.set()
