"""Tell Flask handlers when their client has gone away.

Behind Connexion's WSGI bridge a streaming Flask generator never learns that the client disconnected
(Connexion issue 1822): a2wsgi keeps pulling chunks and the server drops them. This ASGI middleware keeps
listening on `receive()` once the request body has been read, and sets a `threading.Event` stored in the
ASGI scope when `http.disconnect` arrives. A handler reads it with `disconnected(flask.request.environ)`.
Only requests under `prefixes` are watched (chat and model operations: the ones that stream or wait); no other
handler asks.
"""

from __future__ import annotations

import asyncio
import threading

SCOPE_KEY = "jan_server.disconnected"


class DisconnectWatcher:
    def __init__(self, app, prefixes: tuple[str, ...]):
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
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
    scope = environ.get("asgi.scope") or {}
    return scope.get(SCOPE_KEY) or threading.Event()
