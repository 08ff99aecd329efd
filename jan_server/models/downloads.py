"""Fetching GGUF weights over HTTP(S): resumable, verified transfers in background threads, one per model id.

A transfer writes `<file>.part` next to its destination, resumes it with a Range request after a dropped
connection (or a restart), checks the GGUF header and an optional sha256, and only then renames the file into
place, so a partial or foreign file is never taken for a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.models.registry import ModelRecord, Registry, validate_model_id

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
            raise DownloadError(f"Refusing a redirect to a non-http(s) URL: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpRedirectsOnly)


def check_gguf(head: bytes) -> None:
    """Raise DownloadError unless a file's first bytes are GGUF's magic (servers that answer with an HTML page
    are the usual culprits). The engine checks a model's weights with it too, before llama.cpp opens them."""
    if head[: len(GGUF_MAGIC)] != GGUF_MAGIC:
        raise DownloadError(f"Not a GGUF file: it starts with {head[:16]!r} instead of {GGUF_MAGIC!r}.")


class Transfer:
    """One URL copied to one file through `<file>.part`: run() in one thread; progress() and stop() from any."""

    def __init__(self, url: str, dest: Path, *, sha256: str | None = None, timeout: float = TIMEOUT, attempts: int = ATTEMPTS):
        self.url = check_url(url)
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
                    log.info("download of %s interrupted (%s); resuming", self.url, exc)
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
            raise TransientError(f"connection closed after {done} of {total} bytes")
        with open(self.part, "rb") as part:
            check_gguf(part.read(len(GGUF_MAGIC)))
        return hasher.hexdigest() if hasher else None

    def _open(self, headers: dict, offset: int):
        try:
            return _opener.open(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:  # the partial file is not a prefix of what the server holds now
                self.discard()
                raise TransientError("the server refused to resume; starting over") from None
            error = TransientError if exc.code >= 500 or exc.code == 429 else DownloadError
            raise error(f"{self.url} answered HTTP {exc.code} {exc.reason}.") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise TransientError(f"Cannot fetch {self.url}: {getattr(exc, 'reason', None) or exc}.") from exc

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
            raise TransientError(f"connection lost: {exc}") from exc

    def _write(self, out, chunk: bytes, hasher) -> None:
        out.write(chunk)
        if hasher:
            hasher.update(chunk)
        with self._lock:
            self._done += len(chunk)


def lock_model_folder(directory: Path, model_id: str) -> int:
    """An exclusive lock on a model's folder, held while its weights download, so that a server and a
    `jan-server pull` on the same data dir never fetch one model at once. Returns the descriptor that holds it
    (close it to release); the kernel releases it too when the process dies, so a crash leaves no stale lock."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ConflictError(f"Model '{model_id}' is already downloading in another process.", param="id", code="model_downloading") from None
    return descriptor


@dataclass
class Download:
    """A transfer running in its own thread, with the state a model object shows."""

    model_id: str
    transfer: Transfer
    state: str = "downloading"  # then "downloaded", "error" or "stopped"
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    #: The model folder's lock (lock_model_folder), released when the download ends.
    folder_lock: int | None = None

    @property
    def active(self) -> bool:
        return self.state == "downloading"

    def status(self) -> dict:
        done, total = self.transfer.progress()
        return {
            "state": self.state,
            "bytes_downloaded": done,
            "bytes_total": total,
            "percent": round(100 * done / total, 1) if total else None,
            "error": self.error,
        }

    def run(self) -> None:
        try:
            self.transfer.run()
            self.state = "downloaded"
        except Stopped:
            self.state = "stopped"
        except DownloadError as exc:
            self.error = str(exc)
            self.state = "error"
        except Exception as exc:  # a thread's crash must still end in a state, never a model stuck downloading
            log.exception("download of %s failed", self.model_id)
            self.error = f"Download failed: {exc}"
            self.state = "error"
        finally:
            if self.folder_lock is not None:
                os.close(self.folder_lock)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the download has ended."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


class DownloadManager:
    """Background downloads keyed by model id, at most one running per id."""

    def __init__(self) -> None:
        self._downloads: dict[str, Download] = {}
        self._lock = threading.Lock()
        #: Held by start_model_download from its check for a running download to the start of the new one, so two
        #: requests for one model cannot both pass the check and rewrite each other's model.json and partial file.
        self.starting = threading.Lock()

    def start(self, model_id: str, url: str, dest: Path, *, sha256: str | None = None, folder_lock: int | None = None) -> Download:
        """Start fetching url into dest in a thread of its own, which releases `folder_lock` when it ends."""
        transfer = Transfer(url, dest, sha256=sha256)
        with self._lock:
            current = self._downloads.get(model_id)
            if current and current.active:
                raise ConflictError(f"Model '{model_id}' is already downloading.", code="model_downloading")
            download = self._downloads[model_id] = Download(model_id, transfer, folder_lock=folder_lock)
            download.thread = threading.Thread(target=download.run, name=f"download-{model_id}", daemon=True)
            download.thread.start()
        return download

    def get(self, model_id: str) -> Download | None:
        with self._lock:
            return self._downloads.get(model_id)

    def status(self, model_id: str) -> dict | None:
        """The download's state and progress, or None when the id has none."""
        download = self.get(model_id)
        return download.status() if download else None

    def is_active(self, model_id: str) -> bool:
        download = self.get(model_id)
        return bool(download and download.active)

    def cancel(self, model_id: str, timeout: float = 10) -> bool:
        """Stop the id's download and remove its partial file; False if it had none.

        Waits for the thread up to `timeout`: one stuck on a stalled server removes the file itself when it ends.
        """
        with self._lock:
            download = self._downloads.pop(model_id, None)
        if download is None:
            return False
        download.transfer.stop(discard=True)
        download.wait(timeout)
        download.transfer.discard()
        return True

    def close(self, timeout: float = 5) -> None:
        """Stop every download, keeping partial files so the next start resumes them.

        A thread blocked on a stalled server gives up only at its read timeout; it is a daemon, so it is left.
        """
        with self._lock:
            downloads = list(self._downloads.values())
        for download in downloads:
            download.transfer.stop()
        deadline = time.monotonic() + timeout
        for download in downloads:
            download.wait(max(0.0, deadline - time.monotonic()))

    def overlay(self, model: dict) -> dict:
        """A model object as the API shows it, with its download laid over a model not yet on disk:
        state `downloading` (or `error` with the reason) and `metadata.download` = the progress."""
        status = self.status(model["id"])
        if status is None or status["state"] not in ("downloading", "error") or model["state"] != "not_downloaded":
            return model
        progress = {key: status[key] for key in ("bytes_downloaded", "bytes_total", "percent")}
        model = {**model, "state": status["state"], "metadata": {**model["metadata"], "download": progress}}
        if status["error"]:
            model["error"] = status["error"]
        return model


# Models: a download as Jan does it, `<models_dir>/<id>/model.json` naming the source, fetched next to it.

_WEIGHTS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.gguf", re.IGNORECASE)


def default_model_id(url: str) -> str:
    """"…/SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct.q4_1"; when the file name gives no id
    ("https://host/", "…/%25.gguf"), the host name does, and failing that the id is "model"."""
    stem = re.sub(r"\.gguf$", "", file_name(url), flags=re.IGNORECASE)
    for name in (stem, urllib.parse.urlsplit(url).hostname or ""):
        model_id = re.sub(r"[^a-z0-9._:+-]+", "-", name.lower())
        model_id = re.sub(r"\.{2,}", ".", model_id).strip("-._:+")[:128].rstrip("-._:+")
        if model_id:
            return model_id
    return "model"


def _source(manifest: dict) -> dict:
    """Jan's `sources[0]` ({"url", "filename"}, plus our "sha256"), falling back to `source_url`."""
    sources = manifest.get("sources")
    source = dict(sources[0]) if isinstance(sources, list) and sources and isinstance(sources[0], dict) else {}
    if manifest.get("source_url"):
        source["url"] = manifest["source_url"]
    return source


def start_model_download(registry: Registry, downloads: DownloadManager, request: dict) -> ModelRecord:
    """Start downloadModel's request ({"source_url", "id"?, "name"?, "sha256"?, "settings"?, "parameters"?}, or
    {"id"} of a model.json already naming its source): write model.json, then fetch its weights in the background."""
    url = request.get("source_url")
    if not url and not request.get("id"):
        raise InvalidRequestError("Give a source_url, or the id of a model whose model.json names one.", param="source_url")
    if url:
        check_url(url)
    model_id = validate_model_id(request.get("id") or default_model_id(url), param="id")
    with downloads.starting:
        record = registry.find(model_id)
        if downloads.is_active(model_id):
            raise ConflictError(f"Model '{model_id}' is already downloading.", param="id", code="model_downloading")
        if record is not None and record.downloaded:
            raise ConflictError(f"Model '{model_id}' is already downloaded.", param="id", code="model_exists")
        if record is None and not url:
            raise NotFoundError("model", model_id, param="id")
        manifest = dict(record.manifest) if record else {}
        source = _source(manifest)
        url = url or source.get("url")
        if not url:
            raise InvalidRequestError(f"Model '{model_id}' names no source_url to download from.", param="source_url")
        check_url(url)
        sha256 = request.get("sha256") or (source.get("sha256") if source.get("url") == url else None)
        weights = record.weights.name if record and record.weights else file_name(url)
        if not _WEIGHTS_NAME.fullmatch(weights):
            weights = f"{model_id}.gguf"
        manifest.update(
            name=request.get("name") or manifest.get("name") or model_id,
            source_url=url,
            sources=[{"filename": weights, "url": url, **({"sha256": sha256.lower()} if sha256 else {})}],
            settings={**(manifest.get("settings") or {}), **(request.get("settings") or {}), "llama_model_path": weights},
            parameters={**(manifest.get("parameters") or {}), **(request.get("parameters") or {})},
        )
        folder_lock = lock_model_folder(registry.directory(model_id), model_id)
        try:
            if source.get("url") not in (None, url):  # a partial file of another source must not be resumed
                partial_path(registry.directory(model_id) / weights).unlink(missing_ok=True)
            record = registry.save(model_id, manifest)
            downloads.start(model_id, url, record.directory / weights, sha256=sha256, folder_lock=folder_lock)
        except BaseException:
            os.close(folder_lock)
            raise
    return record


def resume_interrupted(registry: Registry, downloads: DownloadManager) -> list[str]:
    """Restart the downloads a stopped server left as `.part` files, so no model stays half-fetched."""
    resumed = []
    for record in registry.list():
        if record.bundled or record.downloaded or record.weights is None or downloads.is_active(record.id):
            continue
        source = _source(record.manifest)
        if partial_path(record.weights).exists() and source.get("url"):
            try:
                folder_lock = lock_model_folder(record.directory, record.id)
            except ConflictError:
                continue  # a `jan-server pull` is fetching it
            try:
                downloads.start(record.id, source["url"], record.weights, sha256=source.get("sha256"), folder_lock=folder_lock)
            except InvalidRequestError as exc:
                os.close(folder_lock)
                log.warning("not resuming the download of %s: %s", record.id, exc.message)
                continue
            resumed.append(record.id)
    return resumed
