"""HTTP translation for each tag of the spec; Connexion dispatches operationIds here (see jan_server.web.dispatch.TagResolver)."""

import json

from flask import Response, current_app

from jan_server.services import Services


def services() -> Services:
    """The domain objects of the running app."""
    return current_app.extensions["jan_server"]


def json_response(payload: dict) -> Response:
    """An explicit JSON response, for operations whose 200 has two media types (Connexion then cannot pick one)."""
    return Response(json.dumps(payload), mimetype="application/json")


def event_stream(events) -> Response:
    """A Server-Sent Events response that proxies are asked not to buffer."""
    return Response(events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
