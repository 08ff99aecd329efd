"""The model service: every model operation (list, describe, start, stop, delete, download, add a remote one) and
the lifecycle downloaded -> starting -> running -> stopping, with one batching Runner per running local model
(which of them stay loaded: jan_server.models.residency) and one Upstream per remote model (jan_server.models.remote).

What changes a model (start, stop, delete, download) runs under that model's lock, one operation at a time, so a
chat that races a delete either gets the runner being stopped (which refuses it: 409 `model_stopping`) or finds
the model gone (404); it never leaves a runner serving a deleted model. Reading (list, describe) takes no lock, so
a model that is starting or stopping shows that state meanwhile. The idle-unload thread stops a model under its
lock too, so a request for it meanwhile waits and then starts it anew. A model stopped to make room shows
`stopping` as well, but its lock is not taken (the starter that makes room holds its own model's, and two
starters taking each other's would deadlock): a request for it meanwhile starts it again. A runner whose decode
outlasts its close (scheduler.CLOSE_TIMEOUT) leaves the model in state `error` and frees its memory once the decode
returns; the lock is not held that long.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from jan_server.models import scheduler
from jan_server.models.aliases import Aliases
from jan_server.models.batching import Runner
from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.models.downloads import DownloadManager, requested_id, start_model_download
from jan_server.models.loading import ThreadBudget, load_settings, load_weights
from jan_server.models.registry import ModelRecord, Registry, validate_model_id
from jan_server.models.prompt_cache import HostCache
from jan_server.models.usage import Usage
from jan_server.models.remote import Upstream, Upstreams, remote_manifest
from jan_server.models.residency import Residency

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
    """The models on disk (registry), their downloads, which are loaded, and the upstreams of the remote ones."""

    def __init__(self, registry: Registry, *, n_threads: int | None = None, max_queued_requests: int = 32,
                 downloads: DownloadManager | None = None, loaded: Residency | None = None, upstreams: Upstreams | None = None,
                 prompt_cache: HostCache | None = None, deterministic: bool = False,
                 aliases: Aliases | None = None):
        self.registry = registry
        self.deterministic = deterministic  # the default of the models' settings.deterministic
        self.prompt_cache = prompt_cache if prompt_cache is not None else HostCache(0)  # shared by every running model
        self.aliases = aliases or Aliases()
        self.downloads = downloads or DownloadManager()
        self.threads = ThreadBudget(n_threads)  # shared by every running model
        self.max_queued_requests = max_queued_requests
        self.loaded = loaded or Residency()
        self.upstreams = upstreams or Upstreams()
        self._states: dict[str, tuple[str, str | None]] = {}  # transient: starting, stopping, error (with why)
        self._locks = KeyedLocks()
        self.usage = Usage()  # observed by the web layer's metrics
        self._closed = threading.Event()
        self._reaper = None
        if self.loaded.idle_timeout:
            self._reaper = threading.Thread(target=self._unload_idle, name="idle-unload", daemon=True)
            self._reaper.start()

    def list(self) -> dict:
        return {"object": "list", "data": [self._aliased(self._object(record)) for record in self.registry.list()]}

    def describe(self, model_id: str) -> dict:
        return self._aliased(self._object(self.registry.get(model_id)))

    def _aliased(self, model: dict) -> dict:
        """The model with `aliases`, the patterns that name it, when some do."""
        patterns = self.aliases.of(model["id"])
        return {**model, "aliases": patterns} if patterns else model

    def running(self, model_id: str) -> Runner | None:
        return self.loaded.get(model_id)

    def start(self, model_id: str, overrides: dict | None = None) -> dict:
        """Load the model unless it is loaded; a failed load leaves it in state `error` with the reason. A remote
        model is not loaded: starting it asks its upstream for its models, to tell whether it answers."""
        record = self.registry.get(model_id)
        if record.remote:
            self.upstreams.get(record).check()
            return self._object(record)
        runner = self._start(model_id, overrides or {}, leased=False)
        return self._object(runner.record)

    def stop(self, model_id: str) -> dict:
        record = self.registry.get(model_id)
        with self._locks.hold(model_id):
            self._stop(model_id)
        return self._object(record)

    def add_remote(self, request: dict) -> dict:
        """Add a model served by a remote engine (POST /v1/models with `"engine": "openai"`): its model.json only."""
        model_id = validate_model_id(request["id"], param="id")
        self.upstreams.check_settings(request["settings"])
        with self._locks.hold(model_id):
            if self.registry.find(model_id) is not None:
                raise ConflictError(f"Model '{model_id}' already exists.", param="id", code="model_exists")
            record = self.registry.save(model_id, remote_manifest(request))
        return self._object(record)

    def delete(self, model_id: str) -> dict:
        """Cancel the model's download, stop it and remove its folder (the bundled model cannot be deleted: 409)."""
        with self._locks.hold(model_id):
            self.registry.deletable(model_id)
            self.downloads.cancel(model_id)  # stops a download and removes its partial file
            self._stop(model_id)
            self.registry.delete(model_id)
            self.upstreams.forget(model_id)
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

    def resolve(self, name: str) -> str:
        """The model a request's `model` names: a model's own id, else the target of the first alias matching it
        (jan_server.models.aliases), else the name itself (which is then not found)."""
        if not self.aliases.rules or self.loaded.get(name) is not None:
            return name
        try:
            if self.registry.find(name) is not None:
                return name
        except InvalidRequestError:
            pass  # not a model id: an alias may still match it
        return self.aliases.target(name) or name

    def remote_for(self, model_id: str) -> Upstream | None:
        """The upstream serving a remote model; None for a local model (or an unknown id: runner_for says 404)."""
        model_id = self.resolve(model_id)
        if self.loaded.get(model_id) is not None:
            return None
        upstream = self.upstreams.cached(model_id)
        if upstream is not None and self.registry.directory(model_id).is_dir():  # its folder may be removed by hand
            return upstream
        try:
            record = self.registry.find(model_id)
        except InvalidRequestError:
            return None
        if record is None or not record.remote:
            self.upstreams.forget(model_id)
            return None
        return self.upstreams.get(record)

    @contextmanager
    def serving(self, model_id: str) -> Iterator[Runner]:
        """The running model, started on first use, and kept from being stopped to make room or for being idle
        until the block ends: prepare and submit its job inside (from then on the job keeps the model busy). An
        alias serves its model."""
        model_id = self.resolve(model_id)
        runner = self._lease(model_id) or self._start(self._valid(model_id), {}, leased=True)
        try:
            yield runner
        finally:
            self.loaded.release(model_id)

    def runner_for(self, model_id: str) -> Runner:
        """The running model, started on first use; an id that cannot name a model is simply not found. Without
        serving's lease, --max-loaded-models may stop it before a job is submitted (a 409 `model_stopping`)."""
        with self.serving(model_id) as runner:
            return runner

    def close(self) -> None:
        self._closed.set()
        if self._reaper is not None:
            self._reaper.join()
        for model_id in self.loaded:
            with self._locks.hold(model_id):
                self._stop(model_id)
        self.prompt_cache.flush()  # the stopped models' cells, on their way to disk
        self.upstreams.close()

    @staticmethod
    def _valid(model_id: str) -> str:
        try:
            return validate_model_id(model_id, param="model")
        except InvalidRequestError:
            raise NotFoundError("model", model_id, param="model") from None

    def _start(self, model_id: str, overrides: dict, leased: bool) -> Runner:
        """Load the model unless it is loaded (leased by the caller if `leased`), making room for it first."""
        self.registry.get(model_id)  # an unknown or invalid id fails before it waits for a lock
        with self._locks.hold(model_id):
            runner = self._lease(model_id)
            if runner is None and self.loaded.get(model_id) is not None:  # its scheduler failed: load it anew
                log.warning("model %s: its scheduler failed; loading it again", model_id)
                self._stop(model_id)
            if runner is not None:
                if not leased:
                    self.loaded.release(model_id)
                return runner
            record = self.registry.get(model_id)  # again: a delete may have run while this waited
            if record.remote:
                raise ConflictError(f"Model '{model_id}' is served by a remote engine, which does not do this.", param="model", code="model_is_remote")
            if not record.downloaded:
                raise ConflictError(f"Model '{model_id}' is not downloaded yet.", param="model", code="model_not_downloaded")
            victims, runner = self.loaded.make_room(model_id), None
            try:
                for victim, closing in victims:
                    log.info("stopping %s to make room for %s (--max-loaded-models %s)", victim, model_id, self.loaded.max_loaded)
                    self._close(victim, closing)
                runner = self._load(record, overrides)
            finally:
                self.loaded.loaded(model_id, runner, leased)
            self._states.pop(model_id, None)  # after the runner is in the table: see _object
            return runner

    def _lease(self, model_id: str) -> Runner | None:
        """The loaded model, leased (see Residency.lease); None if it is not loaded or its scheduler failed."""
        runner = self.loaded.lease(model_id)
        if runner is not None and runner.scheduler.failed:
            self.loaded.release(model_id)
            return None
        return runner

    def _load(self, record: ModelRecord, overrides: dict) -> Runner:
        """Load a local model with its share of the thread budget, showing `starting` meanwhile (the caller ends it)."""
        self._states[record.id] = ("starting", None)
        threads = 0
        try:
            settings = load_settings(record, overrides, self.deterministic)
            settings["n_threads"] = threads = self.threads.take(settings["n_threads"])
            runner = Runner(record, load_weights(record, settings["ngl"]), settings, self.max_queued_requests, self.usage, self.prompt_cache)
        except Exception as exc:
            self.threads.give(threads)
            message = f"Could not load model '{record.id}': {exc}"
            self._states[record.id] = ("error", message)
            log.warning(message)
            # 409, not 500: the server works, but this model (its file, or settings that do not fit in
            # memory) cannot be loaded; the model's state `error` says why until it is changed.
            raise ConflictError(message, code="model_load_failed") from None
        return runner

    def _stop(self, model_id: str) -> None:
        """Close the model's runner, if it runs (hold the model's lock)."""
        self._states.pop(model_id, None)  # a failed load's error too
        runner = self.loaded.take(model_id)
        if runner is not None:
            self._close(model_id, runner)

    def _close(self, model_id: str, runner: Runner) -> None:
        """Close a runner taken out of the table, showing `stopping` until it has closed (unless the model is
        starting again meanwhile), and give its threads back."""
        stopping = ("stopping", None)
        self._states.setdefault(model_id, stopping)
        try:
            if not runner.close() and self._states.get(model_id) == stopping:
                self._states[model_id] = ("error", f"Model '{model_id}' did not stop within {scheduler.CLOSE_TIMEOUT} s: its last decode "
                                                   "goes on, and its memory is freed when that ends.")
        finally:
            if self._states.get(model_id) == stopping:
                self._states.pop(model_id, None)
            self.threads.give(runner.load_settings["n_threads"])

    def _unload_idle(self) -> None:
        """The idle-unload thread: every few seconds (a quarter of the timeout when that is shorter)."""
        interval = min(self.loaded.idle_timeout / 4, 5.0)
        while not self._closed.wait(interval):
            for model_id in self.loaded:
                with self._locks.hold(model_id):  # as stop does: a start waits until the runner has closed
                    runner = self.loaded.idle(model_id)
                    if runner is not None:
                        log.info("stopping %s: idle for %ss (--idle-timeout)", model_id, self.loaded.idle_timeout)
                        self._close(model_id, runner)

    def _object(self, record: ModelRecord) -> dict:
        """The model as the API shows it: what is on disk, then its transient or running state (with the runner's
        settings and counters), then a download of a model not on disk yet (state `downloading` or `error`, and
        `metadata.download` = the progress)."""
        if record.remote:
            return record.to_object("remote", **self.upstreams.get(record).status())
        state, error = self._states.get(record.id, (None, None))  # read before the runner: see _start and _stop
        runner = self.loaded.get(record.id)
        if runner is not None and runner.scheduler.failed:
            state, error = "error", runner.scheduler.failure().message
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
