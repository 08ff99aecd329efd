"""The ASGI -> WSGI bridge (jan_server.web.bridge), driven with ASGI messages: which thread runs each request,
and that request and response pass through whole."""

from __future__ import annotations

import asyncio
import threading

from jan_server.web.bridge import SplitWSGIBridge


def echo_app(environ, start_response):
    """Answers with the thread that ran it and the request body it read."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thread", threading.current_thread().name)])
    return [b"got:", body]


def call(bridge: SplitWSGIBridge, path: str, body: bytes = b"", disconnect: bool = False) -> tuple[list[dict], str]:
    """Send one request through the bridge; returns the messages it sent and the event loop's thread name."""
    messages = [{"type": "http.disconnect"}] if disconnect else [{"type": "http.request", "body": body, "more_body": False}]
    sent = []
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": path, "query_string": b"",
        "root_path": "", "headers": [(b"content-length", str(len(body)).encode())], "server": ("127.0.0.1", 1337),
    }

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def run():
        await bridge(scope, receive, send)
        return threading.current_thread().name

    return sent, asyncio.run(run())


def response(sent: list[dict]) -> tuple[int, dict[bytes, bytes], bytes]:
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_quick_requests_run_on_the_event_loop_when_inline():
    bridge = SplitWSGIBridge(echo_app, ("/v1/chat/",), workers=2, inline=True, quick_workers=1)
    sent, loop_thread = call(bridge, "/v1/threads", b'{"a": 1}')
    status, headers, body = response(sent)
    assert (status, body) == (201, b'got:{"a": 1}')
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"x-thread"].decode() == loop_thread


def test_long_running_requests_run_on_worker_threads():
    bridge = SplitWSGIBridge(echo_app, ("/v1/chat/",), workers=2, inline=True, quick_workers=1)
    sent, loop_thread = call(bridge, "/v1/chat/completions", b"{}")
    status, headers, body = response(sent)
    assert (status, body) == (201, b"got:{}")
    assert headers[b"x-thread"].decode().startswith("WSGI")
    assert headers[b"x-thread"].decode() != loop_thread


def test_quick_requests_use_their_own_threads_when_not_inline():
    bridge = SplitWSGIBridge(echo_app, ("/v1/chat/",), workers=2, inline=False, quick_workers=1)
    sent, _ = call(bridge, "/health")
    status, headers, body = response(sent)
    assert (status, body) == (201, b"got:")
    assert headers[b"x-thread"].decode().startswith("WSGI-quick")


def test_a_client_gone_before_its_body_runs_nothing():
    ran = []

    def app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    bridge = SplitWSGIBridge(app, ("/v1/chat/",), workers=2, inline=True, quick_workers=1)
    sent, _ = call(bridge, "/v1/threads", disconnect=True)
    assert (sent, ran) == ([], [])
