"""The server's guards, as ASGI middlewares in front of Connexion: Host check, CORS, API keys, body size.

They run before routing, so they cover every path (unknown ones too), and answer in OpenAI's error shape.
docs/SECURITY.md lists what they promise and the tests that show it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re

from connexion import FlaskApp
from connexion.middleware import MiddlewarePosition
from connexion.middleware.security import SecurityMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jan_server.errors import error_body
from jan_server.settings import Settings
from jan_server.web.spec_paths import API_BASE_PATH, SPEC_URL, SPEC_YAML_URL

#: Any http(s) origin on this machine, on any port: the default for --cors-origins.
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: Paths under /v1 that stay open with API keys set: the console needs the spec to offer "Authorize".
OPEN_API_PATHS = frozenset({SPEC_URL, SPEC_YAML_URL})
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def install(app: FlaskApp, settings: Settings, uploads: tuple[type, dict]) -> None:
    """Outermost first: the Host check, the path check, CORS (so preflights skip the key check and errors carry CORS
    headers), the API key check, uploads to disk (jan_server.web.uploads: the body limit then sees what is left), the
    body limit."""
    # The spec declares the bearer scheme (for the console's "Authorize") as optional; the key check is
    # ApiKeyMiddleware's, so Connexion's own security layer, which would only warn that it has no
    # x-bearerInfoFunc, is left out.
    app.middleware.middlewares.remove(SecurityMiddleware)
    guards = [(HostCheckMiddleware, {"bound_host": settings.host}), (PathCheckMiddleware, {}), cors_middleware(settings.cors_origins)]
    if settings.api_keys:
        guards.append((ApiKeyMiddleware, {"keys": settings.api_keys}))
    guards += [uploads, (BodyLimitMiddleware, {"max_bytes": settings.max_body_bytes})]
    for middleware, options in guards:
        app.add_middleware(middleware, position=MiddlewarePosition.BEFORE_EXCEPTION, **options)


def cors_middleware(origins: tuple[str, ...]) -> tuple[type, dict]:
    allowed = {"allow_origins": origins} if origins else {"allow_origin_regex": LOCAL_ORIGINS}
    options = {"allow_methods": ["*"], "allow_headers": ["*"], "expose_headers": ["Retry-After"], "allow_private_network": True}
    return CORSMiddleware, {**allowed, **options}


async def send_error(send: Send, status: int, message: str, error_type: str, code: str | None, headers=(), scope: Scope | None = None) -> None:
    """The error as an HTTP answer; to a WebSocket upgrade (`scope` given), as the answer refusing it, where the
    server can send one (ASGI's denial response), else by closing it (a 403)."""
    body = json.dumps(error_body(message, error_type, None, code)).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    prefix = "http"
    if scope is not None and scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        prefix = "websocket.http"
    await send({"type": f"{prefix}.response.start", "status": status, "headers": response_headers})
    await send({"type": f"{prefix}.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


class HostCheckMiddleware:
    """Answer only requests addressed to the bound host, so a DNS-rebinding page cannot reach the API.

    On loopback, localhost/127.0.0.1/[::1] are aliases. Any port is accepted (ssh tunnels and port
    forwards change it; a rebinding page is told apart by its name). Bound to 0.0.0.0 or ::, any host.
    """

    def __init__(self, app: ASGIApp, bound_host: str):
        self.app = app
        host = bound_host.lower().strip("[]")
        self.allowed = None if host in WILDCARD_HOSTS else {host} | (LOOPBACK_NAMES if is_loopback(host) else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.allowed is not None:
            host = (header(scope, b"host") or b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                message = f"This server does not answer for host '{host}'."
                await send_error(send, 421, message, "invalid_request_error", "invalid_host", scope=scope)
                return
        await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """`[::1]:1337` -> `::1`, `LocalHost.:80` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


class PathCheckMiddleware:
    """Answer 404 to paths with `.` or `..` segments, encoded ones too (`..%2F`), or control characters: no id or
    file name has them. A router would resolve dot segments (to a redirect, or another route) before any
    id check, and a newline makes Connexion's and Flask's routers disagree (a 500)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (CONTROL_CHARACTERS.search(path) or any(s in (".", "..") for s in path.split("/"))):
            message = "Nothing here: a path with '.' or '..' segments or control characters names no object."
            await send_error(send, 404, message, "invalid_request_error", "invalid_path")
            return
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Every API request but the spec must carry one of the keys, as `Authorization: Bearer <key>` or (as
    Anthropic's clients send it) `x-api-key: <key>`."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]):
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = scope["type"] in ("http", "websocket") and (path == API_BASE_PATH or path.startswith(f"{API_BASE_PATH}/")) and path not in OPEN_API_PATHS
        if guarded and not self.authorized(bearer(header(scope, b"authorization")), header(scope, b"x-api-key")):
            message = "Missing or incorrect API key. Send it as `Authorization: Bearer <key>` (or `x-api-key: <key>`)."
            await send_error(send, 401, message, "authentication_error", "invalid_api_key", [(b"www-authenticate", b"Bearer")], scope)
            return
        await self.app(scope, receive, send)

    def authorized(self, *tokens: bytes | None) -> bool:
        matched = False
        for token in tokens:
            for key in self.keys:  # no early exit: the time taken does not tell which key came close
                matched |= token is not None and hmac.compare_digest(token.strip(), key)
        return matched


def bearer(authorization: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header."""
    scheme, _, token = (authorization or b"").strip().partition(b" ")
    return token if scheme.lower() == b"bearer" else None


class BodyLimitMiddleware:
    """Request bodies over `max_bytes` get 413: Content-Length is checked up front, a chunked body as it
    arrives. The body is read before the app runs (Connexion reads it whole to validate it anyway), and
    the app is told its length. A JSON body that is not UTF-8 gets 400 here, as RFC 8259 asks."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.too_large(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if is_json(header(scope, b"content-type")) and not is_utf8(body):  # Connexion's decode would crash: 500
            await send_error(send, 400, "The request body is not UTF-8 encoded JSON.", "invalid_request_error", None)
            return
        if declared is None:  # a chunked body: WSGI (Flask behind the bridge) reads none without a length
            headers = [(k, v) for k, v in scope["headers"] if k != b"transfer-encoding"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await self.app(scope, replay(body, receive), send)

    async def too_large(self, send: Send) -> None:
        message = f"Request body is larger than the server's limit of {self.max_bytes} bytes."
        await send_error(send, 413, message, "invalid_request_error", "request_too_large", [(b"connection", b"close")])


def is_json(content_type: bytes | None) -> bool:
    media_type = (content_type or b"").split(b";")[0].strip().lower()
    return media_type == b"application/json" or media_type.endswith(b"+json")


def is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands over the buffered body once, then waits on the client (for disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
