"""The model service: every model operation (list, describe, start, stop, delete, download) and the lifecycle
downloaded -> starting -> running -> stopping, with one batching Runner per running model.

What changes a model (start, stop, delete, download) runs under that model's lock, one operation at a time, so a
chat that races a delete either gets the runner being stopped (which refuses it: 409 `model_stopping`) or finds
the model gone (404); it never leaves a runner serving a deleted model. Reading (list, describe) takes no lock, so
a model that is starting or stopping shows that state meanwhile.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from jan_server.models.batching import Runner
from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.models.downloads import DownloadManager, requested_id, start_model_download
from jan_server.models.loading import ThreadBudget, load_settings, load_weights
from jan_server.models.registry import ModelRecord, Registry, validate_model_id
from jan_server.models.usage import Usage

log = logging.getLogger(__name__)


class KeyedLocks:
    """One lock per key, kept only while it is held or waited for, so the ids a client makes up leave nothing."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # key -> [its lock, how many hold or wait for it]

    def __iter__(self) -> Iterator[str]:
        with self._guard:
            return iter(list(self._locks))

    @contextmanager
    def hold(self, key: str):
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._locks[key]


class ModelManager:
    """The models on disk (registry), their downloads, and which are loaded."""

    def __init__(self, registry: Registry, *, n_threads: int | None = None, max_queued_requests: int = 32, downloads: DownloadManager | None = None):
        self.registry = registry
        self.downloads = downloads or DownloadManager()
        self.threads = ThreadBudget(n_threads)  # shared by every running model
        self.max_queued_requests = max_queued_requests
        self._runners: dict[str, Runner] = {}
        self._states: dict[str, tuple[str, str | None]] = {}  # transient: starting, stopping, error (with why)
        self._locks = KeyedLocks()
        self.usage = Usage()  # observed by the web layer's metrics

    def list(self) -> dict:
        return {"object": "list", "data": [self._object(record) for record in self.registry.list()]}

    def describe(self, model_id: str) -> dict:
        return self._object(self.registry.get(model_id))

    def running(self, model_id: str) -> Runner | None:
        return self._runners.get(model_id)

    def start(self, model_id: str, overrides: dict | None = None) -> dict:
        """Load the model unless it is loaded; a failed load leaves it in state `error` with the reason."""
        return self._object(self._start(model_id, overrides or {}).record)

    def stop(self, model_id: str) -> dict:
        record = self.registry.get(model_id)
        with self._locks.hold(model_id):
            self._stop(model_id)
        return self._object(record)

    def delete(self, model_id: str) -> dict:
        """Cancel the model's download, stop it and remove its folder (the bundled model cannot be deleted: 409)."""
        with self._locks.hold(model_id):
            self.registry.deletable(model_id)
            self.downloads.cancel(model_id)  # stops a download and removes its partial file
            self._stop(model_id)
            self.registry.delete(model_id)
            self._states.pop(model_id, None)
        return {"id": model_id, "object": "model", "deleted": True}

    def download(self, request: dict) -> dict:
        """Start fetching a model's weights in the background (see start_model_download); its object at once."""
        model_id = requested_id(request)
        with self._locks.hold(model_id):
            record = start_model_download(self.registry, self.downloads, request)
        return self._object(record)

    def progress(self, model_id: str, gone: threading.Event, interval: float = 0.5) -> Iterator[dict]:
        """The model object now and every `interval` while it downloads, until the download ends, the model is
        deleted (NotFoundError) or `gone` is set: its client left, and the download goes on without it. The stream
        may also be closed by whoever reads it (e.g. on seeing `gone` first); either way it says so in the log."""
        try:
            while True:
                model = self.describe(model_id)
                yield model
                if model["state"] != "downloading" or gone.wait(interval):
                    return
        finally:
            if gone.is_set():
                log.info("stopped streaming the download progress of %s: its client left", model_id)

    def runner_for(self, model_id: str) -> Runner:
        """The running model, started on first use; an id that cannot name a model is simply not found."""
        runner = self._runners.get(model_id)
        if runner is not None:
            return runner
        try:
            validate_model_id(model_id, param="model")
        except InvalidRequestError:
            raise NotFoundError("model", model_id, param="model") from None
        return self._start(model_id, {})

    def close(self) -> None:
        for model_id in list(self._runners):
            with self._locks.hold(model_id):
                self._stop(model_id)

    def _start(self, model_id: str, overrides: dict) -> Runner:
        self.registry.get(model_id)  # an unknown or invalid id fails before it waits for a lock
        with self._locks.hold(model_id):
            runner = self._runners.get(model_id)
            if runner is not None:
                return runner
            record = self.registry.get(model_id)  # again: a delete may have run while this waited
            if not record.downloaded:
                raise ConflictError(f"Model '{model_id}' is not downloaded yet.", param="model", code="model_not_downloaded")
            self._states[model_id] = ("starting", None)
            threads = 0
            try:
                settings = load_settings(record, overrides)
                settings["n_threads"] = threads = self.threads.take(settings["n_threads"])
                runner = Runner(record, load_weights(record, settings["ngl"]), settings, self.max_queued_requests, self.usage)
            except Exception as exc:
                self.threads.give(threads)
                message = f"Could not load model '{model_id}': {exc}"
                self._states[model_id] = ("error", message)
                log.warning(message)
                # 409, not 500: the server works, but this model (its file, or settings that do not fit in
                # memory) cannot be loaded; the model's state `error` says why until it is changed.
                raise ConflictError(message, code="model_load_failed") from None
            self._runners[model_id] = runner
            self._states.pop(model_id, None)
            return runner

    def _stop(self, model_id: str) -> None:
        """Close the model's runner, if it runs, showing `stopping` until it has closed (hold the model's lock)."""
        self._states.pop(model_id, None)  # a failed load's error too
        runner = self._runners.get(model_id)
        if runner is None:
            return
        self._states[model_id] = ("stopping", None)
        try:
            runner.close()
        finally:
            del self._runners[model_id]
            self._states.pop(model_id, None)
            self.threads.give(runner.load_settings["n_threads"])

    def _object(self, record: ModelRecord) -> dict:
        """The model as the API shows it: what is on disk, then its transient or running state (with the runner's
        settings and counters), then a download of a model not on disk yet (state `downloading` or `error`, and
        `metadata.download` = the progress)."""
        state, error = self._states.get(record.id, (None, None))  # read before the runner: see _start and _stop
        runner = self._runners.get(record.id)
        if runner is not None:
            model = record.to_object(state or "running", **runner.stats())
        else:
            model = record.to_object(state)
        if error:
            model["error"] = error
        download = self.downloads.status(record.id)
        if download is None or download["state"] not in ("downloading", "error") or model["state"] != "not_downloaded":
            return model
        progress = {key: download[key] for key in ("bytes_downloaded", "bytes_total", "percent")}
        model = {**model, "state": download["state"], "metadata": {**model["metadata"], "download": progress}}
        if download["error"]:
            model["error"] = download["error"]
        return model
