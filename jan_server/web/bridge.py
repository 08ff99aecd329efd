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
"""

from __future__ import annotations

import contextvars
import io
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
        if scope["type"] != "http" or self.on_worker(scope):
            return await super().__call__(scope, receive, send)
        if self.inline:
            return await run_inline(self.app, scope, receive, send)
        return await WSGIResponder(self.app, self.quick_executor, self.send_queue_size)(scope, receive, send)


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
