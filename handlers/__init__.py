"""HTTP translation for each tag of the spec; Connexion dispatches operationIds here (see jan_server.web.dispatch.TagResolver)."""

import json
from typing import Callable, Iterable

from flask import Response, current_app, request

from jan_server.services import Services
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
