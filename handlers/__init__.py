"""HTTP translation for each tag of the spec; Connexion dispatches operationIds here (see jan_server.web.dispatch.TagResolver)."""

import json
from typing import Callable, Iterable, Iterator

from flask import Response, current_app, request

from jan_server.errors import ApiError
from jan_server.models.remote import Upstream
from jan_server.services import Services
from jan_server.web import sse
from jan_server.web.chat import DONE
from jan_server.web.disconnect import disconnected, until_disconnect


def services() -> Services:
    """The domain objects of the running app."""
    return current_app.extensions["jan_server"]


def json_response(payload: dict) -> Response:
    """An explicit JSON response, for operations whose 200 has two media types (Connexion then cannot pick one)."""
    return Response(json.dumps(payload), mimetype="application/json")


def event_stream(events: Iterable[bytes], cancel: Callable[[], None] | None = None) -> Response:
    """A Server-Sent Events response that proxies are asked not to buffer. It ends when the client leaves, and
    `cancel()` runs when it ends for any reason (see jan_server.web.disconnect.until_disconnect)."""
    stream = until_disconnect(events, disconnected(request.environ), cancel)
    return Response(stream, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def forwarded(upstream: Upstream, path: str, body: dict) -> Response:
    """A request for a remote model, forwarded to its upstream's `path` (e.g. `chat/completions`): its JSON answer,
    or with `"stream": true` its events relayed one by one (the client leaving closes the upstream request)."""
    if body.get("stream"):
        return event_stream(_relayed(upstream.stream(path, body)))
    return json_response(upstream.post(path, body))


def _relayed(events: Iterator[bytes]) -> Iterator[bytes]:
    """The upstream's events; if it fails mid-stream, an `error` event and `[DONE]`, as a local stream ends."""
    try:
        yield from events
    except ApiError as exc:
        yield sse.event(exc.to_dict(), "error")
        yield DONE
