"""Where requests run: the spec's `x-jan-runs` table (jan_server.web.run_modes), the ASGI -> WSGI bridge
(jan_server.web.bridge) driven with ASGI messages (which thread runs each request, and that request and
response pass through whole), and the whole app checked against the spec, operation by operation."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import pytest
from connexion.json_schema import resolve_refs

from jan_server.settings import Settings
from jan_server.web.app import create_app
from jan_server.web.bridge import SplitWSGIBridge
from jan_server.web.disconnect import SCOPE_KEY
from jan_server.web.dispatch import handler_name
from jan_server.web.run_modes import RunModes, routed_operation
from jan_server.web.spec_bundle import bundle
from tests.test_spec import UNKNOWN_IDS, example_request, operations, request_examples

CHAT = "jan_server.handlers.chat.create_chat_completion"
THREADS = "jan_server.handlers.threads.create_thread"


def on_chat(scope) -> bool:
    return routed_operation(scope) == CHAT


def echo_app(environ, start_response):
    """Answers with the thread that ran it and the request body it read."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thread", threading.current_thread().name)])
    return [b"got:", body]


def call(bridge: SplitWSGIBridge, operation: str | None, body: bytes = b"", disconnect: bool = False) -> tuple[list[dict], str]:
    """Send one request, routed by Connexion to `operation`, through the bridge; returns the messages it sent and
    the event loop's thread name."""
    messages = [{"type": "http.disconnect"}] if disconnect else [{"type": "http.request", "body": body, "more_body": False}]
    sent = []
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/anything", "query_string": b"",
        "root_path": "", "headers": [(b"content-length", str(len(body)).encode())], "server": ("127.0.0.1", 1337),
        "extensions": {"connexion_routing": {"api_base_path": "/v1", "operation_id": operation}},
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
    bridge = SplitWSGIBridge(echo_app, on_chat, workers=2, inline=True, quick_workers=1)
    sent, loop_thread = call(bridge, THREADS, b'{"a": 1}')
    status, headers, body = response(sent)
    assert (status, body) == (201, b'got:{"a": 1}')
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"x-thread"].decode() == loop_thread


def test_long_running_requests_run_on_worker_threads():
    bridge = SplitWSGIBridge(echo_app, on_chat, workers=2, inline=True, quick_workers=1)
    sent, loop_thread = call(bridge, CHAT, b"{}")
    status, headers, body = response(sent)
    assert (status, body) == (201, b"got:{}")
    assert headers[b"x-thread"].decode().startswith("WSGI")
    assert headers[b"x-thread"].decode() != loop_thread


def test_quick_requests_use_their_own_threads_when_not_inline():
    bridge = SplitWSGIBridge(echo_app, on_chat, workers=2, inline=False, quick_workers=1)
    sent, _ = call(bridge, None)
    status, headers, body = response(sent)
    assert (status, body) == (201, b"got:")
    assert headers[b"x-thread"].decode().startswith("WSGI-quick")


def test_a_stream_arrives_whole_in_order_and_at_most_a_queue_ahead_of_a_slow_client():
    sent: list[dict] = []
    ahead = []

    def stream_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        for n in range(300):
            ahead.append(n - sum(1 for message in sent if message.get("body")))
            yield b"%d," % n

    async def slow_send(message):
        await asyncio.sleep(0.0005)
        sent.append(message)

    bridge = SplitWSGIBridge(stream_app, on_chat, workers=2, inline=True, quick_workers=1)
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/x", "query_string": b"",
             "root_path": "", "headers": [], "server": ("127.0.0.1", 1337),
             "extensions": {"connexion_routing": {"api_base_path": "/v1", "operation_id": CHAT}}}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(bridge(scope, receive, slow_send))
    assert response(sent)[2] == b"".join(b"%d," % n for n in range(300))
    assert sent[-1] == {"type": "http.response.body", "body": b""}
    assert max(ahead) <= bridge.send_queue_size + 1  # the status line and headers count as one piece


def test_a_client_gone_before_its_body_runs_nothing():
    ran = []

    def app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    bridge = SplitWSGIBridge(app, on_chat, workers=2, inline=True, quick_workers=1)
    sent, _ = call(bridge, THREADS, disconnect=True)
    assert (sent, ran) == ([], [])


def test_run_modes_read_the_extension_of_each_operation():
    paths = {
        "/chat/completions": {"post": {"operationId": "createChatCompletion", "tags": ["Chat"], "x-jan-runs": "worker"}},
        "/threads": {"parameters": [], "get": {"operationId": "listThreads", "tags": ["Threads"]}},
    }
    modes = RunModes(paths)
    assert modes.worker_operations == {CHAT}
    routed = {"extensions": {"connexion_routing": {"operation_id": CHAT}}}
    assert modes.on_worker(routed)
    assert not modes.on_worker({"extensions": {"connexion_routing": {"operation_id": "jan_server.handlers.threads.list_threads"}}})
    assert not modes.on_worker({"extensions": {"connexion_routing": {"operation_id": None}}})  # an unknown route
    assert not modes.on_worker({})


def test_an_unknown_run_mode_is_refused_at_start():
    paths = {"/threads": {"get": {"operationId": "listThreads", "tags": ["Threads"], "x-jan-runs": "workers"}}}
    with pytest.raises(ValueError, match="GET /threads: x-jan-runs must be 'worker' or absent, not 'workers'"):
        RunModes(paths)


def test_every_operation_runs_where_the_spec_declares(tmp_path):
    """The real app, with its Flask app swapped for a probe after Connexion's routing and validation: each
    operation of the served spec runs on a worker thread, watched for disconnects, exactly when it declares
    `x-jan-runs: worker`; the others, and requests no operation matches, run on the event loop's thread."""
    app = create_app(Settings(data_dir=tmp_path / "data"))
    spec = resolve_refs(bundle())  # the document /v1/openapi.json serves (through the Flask app the probe replaces)
    seen: dict[str | None, tuple[str, bool]] = {}

    def probe(environ, start_response):
        scope = environ["asgi.scope"]
        seen[routed_operation(scope)] = (threading.current_thread().name, SCOPE_KEY in scope)
        start_response("204 No Content", [])
        return []

    app._middleware_app.asgi_app.app = probe  # the bridge's WSGI app, the handlers' Flask app until now

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _op_id, method, path, operation in operations(spec):
                url = "/v1" + re.sub(r"{([^}]+)}", lambda m: UNKNOWN_IDS[m.group(1)], path)
                response = await client.request(method.upper(), url, **example_request(operation, request_examples(operation)[0], {}))
                assert response.status_code == 204, f"{method} {url}: {response.status_code} {response.text}"
            assert (await client.get("/v1/no-such-thing")).status_code == 204
        return threading.current_thread().name

    try:
        loop_thread = asyncio.run(run())
    finally:
        app.app.extensions["jan_server"].close()
    for op_id, _method, _path, operation in operations(spec):
        thread, watched = seen.pop(handler_name(operation["tags"][0], op_id))
        worker = operation.get("x-jan-runs") == "worker"
        assert (thread.startswith("WSGI"), watched) == (worker, worker), f"{op_id} ran on {thread}"
        assert worker or thread == loop_thread, f"{op_id} ran on {thread}"
    assert seen == {None: (loop_thread, False)}
    assert {"createChatCompletion", "downloadModel", "startModel"} <= {
        op_id for op_id, _m, _p, operation in operations(spec) if operation.get("x-jan-runs") == "worker"
    }
