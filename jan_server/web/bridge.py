"""The bridge from Connexion's ASGI stack to the Flask app that runs the handlers.

Connexion's FlaskApp bridges with a2wsgi: every request runs on one pool of 10 threads, and each piece of a
response crosses back to the event loop through a future. Open streams hold those threads, and for short
requests the hand-offs cost more than the work. This bridge sends each request one of two ways:

- Requests of operations the spec marks `x-jan-runs: worker` (chat, which streams and may wait in a model's
  queue; model downloads and loads; see jan_server.web.run_modes) run on a pool of `workers` threads, as
  a2wsgi runs them. The bridge sits after Connexion's routing, so it knows the operation.
- Every other request (the store, /health, /docs, unknown routes) runs to completion on the event loop's own thread. With
  SQLite a store call is a few dozen microseconds of CPU and waits on no network, so running it in place
  is cheaper than any thread: no hand-offs, and none of the GIL contention that made each SQLite call wait
  behind the other threads (docs/BENCHMARKS.md). With another database, which may sit across a network,
  `inline` is off and these requests run on a pool of `quick_workers` threads, so a slow query cannot
  stall the loop.

On either pool a response is handed to the loop by HandOffResponder, which does not make the thread wait for
the loop at each piece.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi import WSGIResponder, build_environ
from starlette.types import Scope


class SplitWSGIBridge(WSGIMiddleware):
    def __init__(self, app, on_worker: Callable[[Scope], bool], workers: int, inline: bool, quick_workers: int):
        """`on_worker(scope)`: whether a request runs on the worker pool (RunModes.on_worker)."""
        super().__init__(app, workers=workers)
        self.on_worker = on_worker
        self.inline = inline
        self.quick_executor = None if inline else ThreadPoolExecutor(thread_name_prefix="WSGI-quick", max_workers=quick_workers)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        on_worker = self.on_worker(scope)
        if self.inline and not on_worker:
            return await run_inline(self.app, scope, receive, send)
        executor = self.executor if on_worker else self.quick_executor
        return await HandOffResponder(self.app, executor, self.send_queue_size)(scope, receive, send)


class HandOffResponder(WSGIResponder):
    """a2wsgi's responder, except that the WSGI thread does not wait for the event loop to take each piece of the
    response (the status and headers, then each chunk): it leaves the piece and goes on, at most `send_queue_size`
    pieces ahead of the loop. a2wsgi's thread waits for the loop to queue every piece, and then for the GIL
    while the loop sends it: about a millisecond per piece here, before a stream's first token and between its
    tokens. The loop is woken once for all the pieces left since it last took them."""

    def __init__(self, app, executor: ThreadPoolExecutor, send_queue_size: int):
        super().__init__(app, executor, send_queue_size)
        self.send_queue = asyncio.Queue()  # `room` bounds it
        self.room = threading.BoundedSemaphore(send_queue_size)
        self.left: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.woken = False

    def send(self, message) -> None:
        self.room.acquire()
        self.left.append(message)
        with self.lock:
            if self.woken:
                return
            self.woken = True
        self.loop.call_soon_threadsafe(self.take)

    def take(self) -> None:
        with self.lock:
            self.woken = False
        while self.left:
            self.send_queue.put_nowait(self.left.popleft())

    async def sender(self, send) -> None:
        while True:
            message = await self.send_queue.get()
            if message is None:  # put by WSGIResponder.__call__ when the app is done, not through send()
                break
            self.room.release()
            await send(message)


async def run_inline(app, scope, receive, send) -> None:
    """Read the request body, run the WSGI app on this thread, and send its whole response."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    response = InlineResponse()
    environ = build_environ(scope, io.BytesIO(b"".join(chunks)))
    contextvars.copy_context().run(response.run, app, environ)  # Flask's request context stays inside the call
    await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
    await send({"type": "http.response.body", "body": b"".join(response.body)})


class InlineResponse:
    """What a WSGI app answers, collected whole."""

    def __init__(self):
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(name.strip().lower().encode("latin1"), value.strip().encode("latin1")) for name, value in headers]
        return self.body.append

    def run(self, app, environ: dict) -> None:
        iterable = app(environ, self.start_response)
        try:
            self.body.extend(iterable)
        finally:
            getattr(iterable, "close", lambda: None)()
