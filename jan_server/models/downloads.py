"""Model downloads: a model's GGUF fetched in a background thread (one per model id) into
`<models_dir>/<id>/`, with its model.json naming the source, a folder lock shared with `jan-server pull`, and the
downloads a stop interrupted resumed at start. The HTTP transfer itself is jan_server.models.transfer; where it
may connect, jan_server.models.egress (a source_url it refuses is a 400).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.models import egress
from jan_server.models.registry import ModelRecord, Registry, validate_model_id
from jan_server.models.transfer import DownloadError, Stopped, Transfer, check_url, file_name, partial_path, proxied

log = logging.getLogger(__name__)


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
    """Background downloads keyed by model id, at most one running per id, to the addresses `egress` allows."""

    def __init__(self, egress: str = "lan") -> None:
        self.egress = egress
        self._downloads: dict[str, Download] = {}
        self._lock = threading.Lock()
        #: Held by start_model_download from its check for a running download to the start of the new one, so two
        #: requests for one model cannot both pass the check and rewrite each other's model.json and partial file.
        self.starting = threading.Lock()

    def start(self, model_id: str, url: str, dest: Path, *, sha256: str | None = None, folder_lock: int | None = None) -> Download:
        """Start fetching url into dest in a thread of its own, which releases `folder_lock` when it ends."""
        transfer = Transfer(url, dest, sha256=sha256, egress=self.egress)
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

    def statuses(self) -> dict[str, dict]:
        """Every download this process ran or runs (until deleted), by model id: its status()."""
        with self._lock:
            downloads = list(self._downloads.values())
        return {download.model_id: download.status() for download in downloads}

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


def requested_id(request: dict) -> str:
    """The id a download request names: its `id`, else one made from its `source_url`'s file name."""
    url = request.get("source_url")
    if not url and not request.get("id"):
        raise InvalidRequestError("Give a source_url, or the id of a model whose model.json names one.", param="source_url")
    if url:
        check_url(url)
    return validate_model_id(request.get("id") or default_model_id(url), param="id")


def start_model_download(registry: Registry, downloads: DownloadManager, request: dict) -> ModelRecord:
    """Start downloadModel's request ({"source_url", "id"?, "name"?, "sha256"?, "settings"?, "parameters"?}, or
    {"id"} of a model.json already naming its source): write model.json, then fetch its weights in the background."""
    url = request.get("source_url")
    model_id = requested_id(request)
    with downloads.starting:
        record = registry.find(model_id)
        if downloads.is_active(model_id):
            raise ConflictError(f"Model '{model_id}' is already downloading.", param="id", code="model_downloading")
        if record is not None and (record.downloaded or record.remote):
            raise ConflictError(f"Model '{model_id}' is already {'a remote model' if record.remote else 'downloaded'}.", param="id", code="model_exists")
        if record is None and not url:
            raise NotFoundError("model", model_id, param="id")
        manifest = dict(record.manifest) if record else {}
        source = _source(manifest)
        url = url or source.get("url")
        if not url:
            raise InvalidRequestError(f"Model '{model_id}' names no source_url to download from.", param="source_url")
        check_url(url)
        egress.check_url(url, downloads.egress, "source_url", proxied=proxied(url))
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
