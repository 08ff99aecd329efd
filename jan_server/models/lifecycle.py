"""The model manager: loads GGUF models with llama-cpp-python and keeps one batching Runner per running model."""

from __future__ import annotations

import logging
import os
import threading
import time

from jan_server.models.batching import Runner
from jan_server.models.downloads import GGUF_MAGIC, DownloadManager, check_gguf
from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.models.registry import ModelRecord, Registry, validate_model_id

log = logging.getLogger(__name__)

_load_lock = threading.Lock()  # llama-cpp-python's quiet mode redirects the process's stderr while loading


class ModelManager:
    """Which models are loaded, and their lifecycle: downloaded -> starting -> running -> stopping."""

    def __init__(self, registry: Registry, *, n_threads: int | None = None, max_queued_requests: int = 32, downloads: DownloadManager | None = None):
        self.registry = registry
        self.downloads = downloads  # shows the progress of models not on disk yet
        self.n_threads = n_threads or os.cpu_count() or 1
        self.max_queued_requests = max_queued_requests
        self._runners: dict[str, Runner] = {}
        self._states: dict[str, tuple[str, str | None]] = {}  # transient: starting, stopping, error
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def describe(self, record: ModelRecord) -> dict:
        runner = self._runners.get(record.id)
        if runner is not None:
            obj = record.to_object("running", **runner.stats())
        else:
            state, error = self._states.get(record.id, (None, None))
            obj = record.to_object(state)
            if error:
                obj["error"] = error
        return self.downloads.overlay(obj) if self.downloads else obj

    def running(self, model_id: str) -> Runner | None:
        return self._runners.get(model_id)

    def start(self, model_id: str, overrides: dict | None = None) -> Runner:
        """Load the model unless it is loaded; a failed load leaves it in state `error` with the reason."""
        self.registry.get(model_id)  # an unknown id is not found before it gets a lock of its own
        with self._model_lock(model_id):
            runner = self._runners.get(model_id)
            if runner is not None:
                return runner
            record = self.registry.get(model_id)
            if not record.downloaded:
                raise ConflictError(f"Model '{model_id}' is not downloaded yet.", param="model", code="model_not_downloaded")
            load_settings = self._load_settings(record, overrides or {})
            self._states[model_id] = ("starting", None)
            try:
                runner = Runner(record, self._load(record, load_settings), load_settings, self.max_queued_requests)
            except Exception as exc:
                message = f"Could not load model '{model_id}': {exc}"
                self._states[model_id] = ("error", message)
                log.warning(message)
                # 409, not 500: the server works, but this model (its file, or settings that do not fit in
                # memory) cannot be loaded; the model's state `error` says why until it is changed.
                raise ConflictError(message, code="model_load_failed") from None
            self._runners[model_id] = runner
            self._states.pop(model_id, None)
            return runner

    def stop(self, model_id: str) -> None:
        with self._model_lock(model_id):
            self._states.pop(model_id, None)
            runner = self._runners.get(model_id)
            if runner is None:
                return
            self._states[model_id] = ("stopping", None)
            try:
                runner.close()
            finally:
                del self._runners[model_id]
                self._states.pop(model_id, None)

    def forget(self, model_id: str) -> None:
        """Drop what is known about a deleted model (call after stop)."""
        self._states.pop(model_id, None)
        with self._lock:
            self._locks.pop(model_id, None)

    def runner_for(self, model_id: str) -> Runner:
        """The running model, started on first use; an id that cannot name a model is simply not found."""
        runner = self._runners.get(model_id)
        if runner is not None:
            return runner
        try:
            validate_model_id(model_id, param="model")
        except InvalidRequestError:
            raise NotFoundError("model", model_id, param="model") from None
        return self.start(model_id)

    def close(self) -> None:
        for model_id in list(self._runners):
            self.stop(model_id)

    def _model_lock(self, model_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(model_id, threading.Lock())

    def _load_settings(self, record: ModelRecord, overrides: dict) -> dict:
        settings = {**record.settings, **overrides}
        return {
            "ctx_len": int(settings.get("ctx_len") or 2048),
            "ngl": int(settings.get("ngl") or 0),
            "n_threads": int(settings.get("n_threads") or self.n_threads),
            "n_batch": int(settings.get("n_batch") or 512),
            "n_parallel": int(settings.get("n_parallel") or 1),
        }

    @staticmethod
    def _load(record: ModelRecord, load_settings: dict):
        """The model's weights and vocabulary (the Runner makes the context)."""
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        with open(record.weights, "rb") as weights:
            check_gguf(weights.read(len(GGUF_MAGIC)))
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = load_settings["ngl"]
        with _load_lock:
            started = time.monotonic()
            model = LlamaModel(path_model=str(record.weights), params=params, verbose=False)
        log.info("loaded %s in %.2fs", record.id, time.monotonic() - started)
        return model

