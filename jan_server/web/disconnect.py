"""Tell Flask handlers when their client has gone away.

Behind Connexion's WSGI bridge a streaming Flask generator never learns that the client disconnected
(Connexion issue 1822): a2wsgi keeps pulling chunks and the server drops them. DisconnectWatcher, an ASGI
middleware placed after Connexion's routing and request validation, keeps listening on `receive()` once the
request body has been read, and sets a `threading.Event` stored in the ASGI scope when `http.disconnect`
arrives. Only requests of operations that run on worker threads (the ones that stream or wait; see
jan_server.web.run_modes) are watched. A handler reads the event with `disconnected(flask.request.environ)`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

from starlette.types import Scope

SCOPE_KEY = "jan_server.disconnected"


class DisconnectWatcher:
    def __init__(self, app, watched: Callable[[Scope], bool]):
        """`watched(scope)`: whether a request is watched (RunModes.on_worker)."""
        self.app = app
        self.watched = watched

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.watched(scope):
            return await self.app(scope, receive, send)
        event = threading.Event()
        scope[SCOPE_KEY] = event
        watcher: asyncio.Task | None = None

        async def watch():
            message = await receive()
            if message["type"] == "http.disconnect":
                event.set()
            return message

        async def watched_receive():
            nonlocal watcher
            if watcher is not None:  # the body is complete; the next message can only be the disconnect
                return await asyncio.shield(watcher)
            message = await receive()
            if message["type"] == "http.disconnect":
                event.set()
            elif not message.get("more_body", False):
                watcher = asyncio.ensure_future(watch())
            return message

        try:
            await self.app(scope, watched_receive, send)
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()


def disconnected(environ: dict) -> threading.Event:
    """The request's disconnect event (a never-set one outside the watcher, e.g. in a plain WSGI test client)."""
    scope = environ.get("asgi.scope") or {}  # a2wsgi puts the ASGI scope in the WSGI environ
    return scope.get(SCOPE_KEY) or threading.Event()
