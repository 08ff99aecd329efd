"""File uploads streamed to disk: a multipart body sent to an upload path (createFile's) is written, as it arrives,
to a staging file in the data dir, and the app sees a small body in its place.

Connexion validates a multipart body by keeping all of it in memory (and the body limit reads it whole), so an
upload cannot go through them as sent. Here the file part is written to `<data-dir>/uploads/` (up to
`max_bytes`, 413 beyond) and replaced by an empty part of the same name and filename; the request then carries
the staged file's name in STAGED_HEADER, which only this middleware sets (a client's own is dropped). The
handler stores the staged file; the middleware deletes it once the request ends, whatever happened.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.types import ASGIApp, Receive, Scope, Send

from jan_server.settings import Settings
from jan_server.web.security import header, replay, send_error

STAGED_HEADER = b"x-jan-staged-file"
#: Multipart framing and the form's other fields, on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
#: Staged files older than this at start-up were left by a crash.
STALE_SECONDS = 3600


def upload_paths(base_path: str, paths: dict) -> frozenset[str]:
    """The paths whose POST takes a multipart body (createFile's), under `base_path`."""
    return frozenset(
        base_path + path for path, item in paths.items()
        if "multipart/form-data" in item.get("post", {}).get("requestBody", {}).get("content", {})
    )


def staging_dir(data_dir: Path) -> Path:
    return data_dir / "uploads"


def middleware(settings: Settings, base_path: str, paths: dict) -> tuple[type, dict]:
    """UploadMiddleware and its options."""
    options = {"paths": upload_paths(base_path, paths), "staging_dir": staging_dir(settings.data_dir), "max_bytes": settings.max_file_bytes}
    return UploadMiddleware, options


class UploadMiddleware:
    def __init__(self, app: ASGIApp, paths: frozenset[str], staging_dir: Path, max_bytes: int):
        self.app = app
        self.paths = paths
        self.staging_dir = staging_dir
        self.max_bytes = max_bytes
        staging_dir.mkdir(parents=True, exist_ok=True)
        for stale in staging_dir.iterdir():
            if stale.stat().st_mtime < time.time() - STALE_SECONDS:
                stale.unlink(missing_ok=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(key, value) for key, value in scope["headers"] if key != STAGED_HEADER]
        scope = {**scope, "headers": headers}
        content_type, options = parse_options_header(header(scope, b"content-type") or b"")
        if scope["method"] != "POST" or scope["path"] not in self.paths or content_type != b"multipart/form-data" or b"boundary" not in options:
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes + FORM_OVERHEAD_BYTES:
            await self.too_large(send)
            return
        staged = self.staging_dir / secrets.token_hex(16)
        form = _Form(options[b"boundary"], staged, self.max_bytes)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                try:
                    if not form.feed(message.get("body", b"")):
                        await self.too_large(send)
                        return
                except MultipartParseError:
                    break
                if not message.get("more_body", False):
                    break
            if not form.complete():
                await send_error(send, 400, "The body is not a complete multipart form.", "invalid_request_error", None)
                return
            body, boundary = form.rewritten()
            headers = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type", b"transfer-encoding")]
            headers += [(b"content-type", b"multipart/form-data; boundary=" + boundary), (b"content-length", str(len(body)).encode())]
            if form.file is not None:
                headers.append((STAGED_HEADER, staged.name.encode()))
            await self.app({**scope, "headers": headers}, replay(body, receive), send)
        finally:
            form.close()
            staged.unlink(missing_ok=True)

    async def too_large(self, send: Send) -> None:
        message = f"The file is larger than the server's upload limit of {self.max_bytes} bytes."
        await send_error(send, 413, message, "invalid_request_error", "file_too_large", [(b"connection", b"close")])


class _Form:
    """A multipart body parsed as it arrives: its first file part written to `staged`, the other parts kept
    (text fields in full, further file parts as their names only)."""

    def __init__(self, boundary: bytes, staged: Path, max_bytes: int):
        self.staged_path, self.max_bytes = staged, max_bytes
        self.file = None  # the open staging file, once a file part began
        self.parts: list[tuple[bytes, list[bytes]]] = []  # (Content-Disposition, text value pieces)
        self.size = self.text_size = 0
        self.current_file = False
        self._field = self._value = b""
        self._disposition = b""
        callbacks = {
            "on_header_field": lambda data, start, end: self._add("_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def feed(self, data: bytes) -> bool:
        """Parse `data`; False once the file outgrew the limit (or the text fields FORM_OVERHEAD_BYTES)."""
        self.parser.write(data)
        return self.size <= self.max_bytes and self.text_size <= FORM_OVERHEAD_BYTES

    def complete(self) -> bool:
        """Whether the body parsed up to its closing boundary."""
        return self.parser.state == MultipartState.END

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self.current_file = b"filename" in options and self.file is None
        if self.current_file:
            self.file = self.staged_path.open("wb")
        self.parts.append((self._disposition, []))
        self._disposition = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current_file:
            self.size += end - start
            if self.size <= self.max_bytes:
                self.file.write(data[start:end])
        elif b"filename" not in parse_options_header(self.parts[-1][0])[1]:
            self.text_size += end - start
            self.parts[-1][1].append(data[start:end])

    def rewritten(self) -> tuple[bytes, bytes]:
        """The body the app sees (the file parts empty) and its boundary."""
        self.close()
        boundary = secrets.token_hex(16).encode()
        body = b"".join(
            b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + b"".join(value) + b"\r\n"
            for disposition, value in self.parts
        )
        return body + b"--" + boundary + b"--\r\n", boundary

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
