"""Tell Flask handlers when their client has gone away, and end their streams then.

Behind Connexion's WSGI bridge a streaming Flask generator never learns that the client disconnected
(Connexion issue 1822): a2wsgi keeps pulling chunks and the server drops them. DisconnectWatcher, an ASGI
middleware placed after Connexion's routing and request validation, keeps listening on `receive()` once the
request body has been read, and sets a `threading.Event` stored in the ASGI scope when `http.disconnect`
arrives. Only requests of operations that run on worker threads (the ones that stream or wait; see
jan_server.web.run_modes) are watched. A handler reads the event with `disconnected(flask.request.environ)`,
and every stream goes through `until_disconnect` (jan_server.handlers.event_stream applies it).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Iterable, Iterator

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


def until_disconnect(chunks: Iterable[bytes], gone: threading.Event, cancel: Callable[[], None] | None = None) -> Iterator[bytes]:
    """The chunks of a streamed response until the client is `gone`. `cancel()` runs once the stream ends,
    however it ends: finished, client gone, the producer failed, or the server closed the response.

    The event is checked each time the server asks for the next chunk, before the producer is asked; a producer
    that waits between chunks should wait on the event too, or be stopped by `cancel`. Handlers use this through
    `jan_server.handlers.event_stream(events, cancel)`. Chat gives the event to its job (which stops generating
    once it is set) and cancels the job when the stream ends. A progress stream polls with `gone.wait(interval)`
    instead of `time.sleep(interval)`, so an abandoned one frees its thread at once:

        gone = disconnected(request.environ)
        return event_stream(progress_events(describe, wait=gone.wait))
    """
    try:
        for chunk in chunks:
            yield chunk
            if gone.is_set():
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the producer's own cleanup runs now, not whenever it is collected
        if cancel is not None:
            cancel()
