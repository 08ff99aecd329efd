"""One URL copied to one file over HTTP(S): redirects (http and https only), resume with Range, retries, an
optional sha256, and the GGUF magic checked before the file is accepted.

Every connection, the first and each redirect's, goes through jan_server.models.egress, which resolves the host,
refuses it if the egress setting refuses any of its addresses, and connects to those it checked. The environment's
proxies are used (http_proxy, https_proxy, no_proxy, as urllib reads them): the connection is then the proxy's,
checked so, and the target is checked, at every request and redirect, only where it can be without resolving its
name: a host that is an IP address. A name is the proxy's to resolve. What the source answered is not echoed in
errors beyond the status class (a 4xx): a download must not be a probe of the server's network for whoever may
start one.

A transfer writes `<file>.part` next to its destination, resumes it with a Range request after a dropped
connection (or a restart), and only renames it into place once verified, so a partial or foreign file is never
taken for a model. Nothing here knows about models: see jan_server.models.downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

from jan_server.errors import InvalidRequestError
from jan_server.models.egress import Refused, check_address, connect, shown

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
PART_SUFFIX = ".part"
#: Most bytes taken from the socket per read; loopback hands over whatever it holds, up to this.
READ_SIZE = 4 << 20
#: Seconds to connect, and between two reads, before a stalled server counts as gone.
TIMEOUT = 30.0
#: A dropped connection, a timeout or a 5xx is retried this many times in all, each resuming where it stopped.
ATTEMPTS = 5
USER_AGENT = "jan-server"


class DownloadError(Exception):
    """A transfer that cannot complete; the message is what the model shows."""


class TransientError(DownloadError):
    """A failure worth another attempt (network, 5xx); the partial file is kept."""


class Stopped(Exception):
    """The transfer was asked to stop."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed `[` of an IPv6 host
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(f"source_url must be an http or https URL, not {url!r}.", param="source_url")
    return url


def file_name(url: str) -> str:
    """The last segment of the URL's path: ".../SmolLM2.Q4_1.gguf?download=true" -> "SmolLM2.Q4_1.gguf"."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rpartition("/")[2])


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise DownloadError("The download source redirected to a URL that is not http(s).")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def proxied(url: str) -> bool:
    """Whether urllib sends a request for `url` through a proxy from the environment (no_proxy naming its host not)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.netloc)


def _target(egress: str, req: urllib.request.Request) -> urllib.request.Request:
    """The request, Refused first if it goes through a proxy (egress.connect then sees only the proxy's address)
    to a target that is an IP address egress refuses."""
    if req.has_proxy() or req._tunnel_host:  # a plain request, or a CONNECT tunnel for https
        check_address(urllib.parse.urlsplit(req.full_url).hostname or "", egress)
    return req


def _connection(cls, egress: str, host: str, **kwargs) -> http.client.HTTPConnection:
    """An http.client connection whose socket egress.connect opens (http.client calls `_create_connection` where it
    would call socket.create_connection)."""
    connection = cls(host, **kwargs)
    connection._create_connection = partial(connect, egress)
    return connection


class _Checked:
    """What urllib's HTTP and HTTPS handlers share here: connections egress.connect opens, proxied targets checked."""

    def __init__(self, egress: str):
        super().__init__()
        self.egress = egress

    def _checked_open(self, connection_class, req):
        return self.do_open(partial(_connection, connection_class, self.egress), _target(self.egress, req))


class _Http(_Checked, urllib.request.HTTPHandler):
    def http_open(self, req):
        return self._checked_open(http.client.HTTPConnection, req)


class _Https(_Checked, urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self._checked_open(http.client.HTTPSConnection, req)


def opener(egress: str) -> urllib.request.OpenerDirector:
    """urllib's opener, with the environment's proxies and every connection (redirects' too) checked by egress."""
    return urllib.request.build_opener(urllib.request.ProxyHandler(), _Http(egress), _Https(egress), _HttpRedirectsOnly)


def check_gguf(head: bytes) -> None:
    """Raise DownloadError unless a file's first bytes are GGUF's magic (servers that answer with an HTML page
    are the usual culprits). loading.load_weights checks a model's weights with it too, before llama.cpp opens them."""
    if head[: len(GGUF_MAGIC)] != GGUF_MAGIC:
        raise DownloadError(f"Not a GGUF file: it does not start with {GGUF_MAGIC!r}.")


class Transfer:
    """One URL copied to one file through `<file>.part`: run() in one thread; progress() and stop() from any."""

    def __init__(self, url: str, dest: Path, *, sha256: str | None = None, timeout: float = TIMEOUT, attempts: int = ATTEMPTS,
                 egress: str = "lan"):
        self.url = check_url(url)
        self._opener = opener(egress)
        self.dest = Path(dest)
        self.part = partial_path(self.dest)
        self.sha256 = sha256.lower() if sha256 else None
        self.timeout = timeout
        self.attempts = attempts
        self._done = 0
        self._total: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._discard_on_stop = False

    def progress(self) -> tuple[int, int | None]:
        """(bytes downloaded, bytes in all or None while unknown)."""
        with self._lock:
            return self._done, self._total

    def stop(self, *, discard: bool = False) -> None:
        """Make run() raise Stopped soon, keeping the partial file for a later resume unless `discard`."""
        self._discard_on_stop = discard
        self._stop.set()

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)

    def run(self) -> Path:
        """Download, verify and move into place; raises DownloadError or Stopped."""
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    digest = self._attempt()
                    break
                except TransientError as exc:
                    if attempt == self.attempts:
                        raise
                    log.info("download of %s interrupted (%s); resuming", shown(self.url), exc)
                    if self._stop.wait(min(0.25 * 2**attempt, 5)):
                        raise Stopped from None
            if self.sha256 and digest != self.sha256:
                raise DownloadError(f"sha256 mismatch: expected {self.sha256}, got {digest}.")
        except TransientError:
            raise
        except DownloadError:
            self.discard()
            raise
        except Stopped:
            if self._discard_on_stop:
                self.discard()
            raise
        os.replace(self.part, self.dest)
        return self.dest

    def _attempt(self) -> str | None:
        """One request, resuming the partial file; returns its sha256 hex when one was asked for."""
        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self._open(headers, offset)
        with response:
            if self._stop.is_set():
                raise Stopped
            start, total = self._extent(response, offset)
            with self._lock:
                self._done, self._total = start, total
            hasher = self._hasher(start)
            try:
                with open(self.part, "ab" if start else "wb", buffering=0) as out:
                    if not start:
                        head = self._read(response.read, len(GGUF_MAGIC))
                        check_gguf(head)
                        self._write(out, head, hasher)
                    while chunk := self._read(response.read1, READ_SIZE):
                        self._write(out, chunk, hasher)
                        if self._stop.is_set():
                            raise Stopped
            except OSError as exc:
                raise DownloadError(f"Cannot write {self.part.name}: {exc.strerror or exc}.") from exc
        done = self.progress()[0]
        if total is not None and done < total:
            raise TransientError("The download source closed the connection before the end of the file.")
        with open(self.part, "rb") as part:
            check_gguf(part.read(len(GGUF_MAGIC)))
        return hasher.hexdigest() if hasher else None

    def _open(self, headers: dict, offset: int):
        try:
            return self._opener.open(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)
        except Refused as exc:
            raise DownloadError(f"The download source, a redirect of it, or the proxy it goes through, is at {exc}.") from None
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:  # the partial file is not a prefix of what the server holds now
                self.discard()
                raise TransientError("the server refused to resume; starting over") from None
            if 300 <= exc.code < 400:  # urllib's refusal of a redirect (a loop, too many, or a scheme it does not follow)
                raise DownloadError("The download source redirected where a download cannot follow.") from None
            error = TransientError if exc.code >= 500 or exc.code == 429 else DownloadError
            raise error(f"The download source answered with a {exc.code // 100}xx error.") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            log.info("cannot fetch %s: %s", shown(self.url), getattr(exc, "reason", None) or exc)
            raise TransientError("The download source could not be reached.") from exc

    def _extent(self, response, offset: int) -> tuple[int, int | None]:
        """(where this response starts in the file, the file's full size if known); a 200 restarts from zero."""
        if response.status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != offset:
                self.discard()
                raise TransientError("the server sent another range than asked; starting over")
            return offset, int(match[2]) if match[2] != "*" else None
        length = response.headers.get("Content-Length", "")
        return 0, int(length) if length.isdigit() else None

    def _hasher(self, start: int):
        """A sha256 fed with the first `start` bytes already on disk, or None when no checksum was given."""
        if not self.sha256:
            return None
        hasher = hashlib.sha256()
        if start:
            with open(self.part, "rb") as part:
                while start > 0 and (block := part.read(min(READ_SIZE, start))):
                    hasher.update(block)
                    start -= len(block)
        return hasher

    @staticmethod
    def _read(read, size: int) -> bytes:
        """`read(size)` of the response (read or read1), a lost connection being worth another attempt."""
        try:
            return read(size)
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError("The connection to the download source was lost.") from exc

    def _write(self, out, chunk: bytes, hasher) -> None:
        out.write(chunk)
        if hasher:
            hasher.update(chunk)
        with self._lock:
            self._done += len(chunk)
