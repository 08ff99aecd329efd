"""A real HTTP file server on 127.0.0.1 for download tests and benches: Range requests, redirects, error
statuses, throttling, and a connection dropped half-way; it records every request's headers."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PIECE = 64 * 1024


@dataclass
class Route:
    body: bytes | Path = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    #: Answer with a 302 to this URL instead.
    location: str | None = None
    #: False: ignore Range headers and always send the whole body with a 200.
    honour_range: bool = True
    #: Close the connection after sending this many bytes of the body, the next `drops` times.
    drop_after: int | None = None
    drops: int = 1
    #: Bytes per second; None sends as fast as the socket takes (sendfile for files). May change while serving.
    rate: float | None = None

    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner.requests.append(Recorded(self.path, dict(self.headers.items())))
        route = self.server.owner.routes.get(self.path)
        if route is None:
            return self._reply(404, b"Not Found", "text/plain")
        if route.location:
            return self._reply(302, b"", "text/plain", {"Location": route.location})
        if route.status != 200:
            return self._reply(route.status, route.body if isinstance(route.body, bytes) else b"", route.content_type)
        size = route.size()
        start, end = 0, size
        headers = {"Accept-Ranges": "bytes"} if route.honour_range else {}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and route.honour_range:
            start = int(match[1])
            end = min(int(match[2]) + 1, size) if match[2] else size
            if start >= size:
                return self._reply(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self.send_response(206 if "Content-Range" in headers else 200)
        self._headers(route.content_type, end - start, headers)
        try:
            self._send_body(route, start, end)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _reply(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self._headers(content_type, len(body), headers or {})
        self.wfile.write(body)

    def _headers(self, content_type: str, length: int, headers: dict) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True

    def _send_body(self, route: Route, start: int, end: int) -> None:
        limit = end
        if route.drop_after is not None and route.drops > 0:
            route.drops -= 1
            limit = min(end, start + route.drop_after)
        if isinstance(route.body, Path) and route.rate is None and limit == end:
            with open(route.body, "rb") as source:
                offset = start
                while offset < end:
                    offset += os.sendfile(self.connection.fileno(), source.fileno(), offset, end - offset)
            return
        data = route.body.read_bytes() if isinstance(route.body, Path) else route.body
        position = start
        while position < limit:
            rate = route.rate
            piece = min(PIECE, int(rate / 20) or 1) if rate else PIECE
            chunk = data[position : min(position + piece, limit)]
            self.wfile.write(chunk)
            position += len(chunk)
            if rate:
                time.sleep(len(chunk) / rate)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "FileServer"


@dataclass
class FileServer:
    """`with FileServer() as files: url = files.add("/m.gguf", Route(body=path))`."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _server: _Server | None = None

    def start(self) -> "FileServer":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-fixture", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def requests_for(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path]
