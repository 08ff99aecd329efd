"""How a model is loaded: its settings (from the one table of defaults), its share of the server's llama.cpp
threads, and its weights read by llama-cpp-python (the Runner then makes the context)."""

from __future__ import annotations

import logging
import os
import threading
import time

from jan_server.models.registry import DEFAULT_SETTINGS, ModelRecord
from jan_server.models.transfer import GGUF_MAGIC, check_gguf

log = logging.getLogger(__name__)

#: The settings a Runner loads with, besides `n_threads` (which the ThreadBudget grants).
LOAD_KEYS = ("ctx_len", "ngl", "n_batch", "n_parallel")
#: RoPE scaling types, named as llama-server's --rope-scaling names them.
ROPE_SCALINGS = ("none", "linear", "yarn")

_load_lock = threading.Lock()  # llama-cpp-python's quiet mode redirects the process's stderr while loading


class ThreadBudget:
    """The llama.cpp threads that all running models share; by default one per core.

    llama.cpp's threads spin while they wait for each other, so two models that each use every core (or one model
    and any other busy process) run several times slower than one. A starting model takes the threads it asks for
    (its `n_threads`; by default the whole budget), but no more than the running models left, and at least 1;
    a model that stops gives its threads back. Running models keep what they were given.
    """

    def __init__(self, total: int | None = None):
        self.total = total or os.cpu_count() or 1
        self.used = 0
        self._lock = threading.Lock()

    def take(self, wanted: int | None = None) -> int:
        with self._lock:
            granted = max(1, min(wanted or self.total, self.total - self.used))
            self.used += granted
            return granted

    def give(self, count: int) -> None:
        with self._lock:
            self.used -= count


def load_settings(record: ModelRecord, overrides: dict, deterministic: bool = False) -> dict:
    """What the model loads with: the start request's overrides, else its model.json, else DEFAULT_SETTINGS (a zero
    or missing value means the default; `flash_attn` is a boolean, so only a missing one does; a missing
    `deterministic` is the server's `deterministic`). `n_threads` is what the model asks for, None for the whole
    budget; `ctx_len` 0, the trained context (the Runner sizes it once the weights are read)."""
    settings = {**record.settings, **overrides}
    loaded = {key: int(settings.get(key) or DEFAULT_SETTINGS.get(key, 0)) for key in LOAD_KEYS}
    loaded["n_threads"] = int(settings["n_threads"]) if settings.get("n_threads") else None
    loaded["flash_attn"] = bool(DEFAULT_SETTINGS["flash_attn"] if settings.get("flash_attn") is None else settings["flash_attn"])
    loaded["deterministic"] = bool(deterministic if settings.get("deterministic") is None else settings["deterministic"])
    loaded["rope_scaling"] = settings.get("rope_scaling")
    if loaded["rope_scaling"] not in (None, *ROPE_SCALINGS):
        raise ValueError(f"rope_scaling {loaded['rope_scaling']!r} is none of {', '.join(ROPE_SCALINGS)}")
    loaded["rope_scale"] = within(settings["rope_scale"], "rope_scale", 1, 1024) if settings.get("rope_scale") else None
    return loaded


def within(value, name: str, low: float, high: float) -> float:
    """A number setting between `low` and `high`, as the spec bounds it (nothing checks a model.json against it)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise ValueError(f"{name} {value!r} is not a number from {low:g} to {high:g}")
    return number


def rope_scale(settings: dict, n_ctx_train: int) -> float | None:
    """How far linear or YaRN scaling stretches the trained positions: `rope_scale`, else the context over the
    trained one (at least 1; llama-server's --rope-scale). None for no scaling, or the GGUF's own."""
    if settings["rope_scaling"] not in ("linear", "yarn"):
        return None
    return settings["rope_scale"] or max(1.0, settings["ctx_len"] / n_ctx_train)


def rope_params(settings: dict) -> dict:
    """The llama.cpp context parameters of the model's RoPE scaling (none set: what its GGUF says)."""
    import llama_cpp

    if settings["rope_scaling"] is None:
        return {}
    params = {"rope_scaling_type": getattr(llama_cpp, f"LLAMA_ROPE_SCALING_TYPE_{settings['rope_scaling'].upper()}")}
    if settings["rope_scale"]:
        params["rope_freq_scale"] = 1 / settings["rope_scale"]
    return params


def load_weights(record: ModelRecord, ngl: int):
    """The model's weights and vocabulary, `ngl` layers of them on the GPU."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    with open(record.weights, "rb") as weights:
        check_gguf(weights.read(len(GGUF_MAGIC)))
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = ngl
    with _load_lock:
        started = time.monotonic()
        model = LlamaModel(path_model=str(record.weights), params=params, verbose=False)
    log.info("loaded %s in %.2fs", record.id, time.monotonic() - started)
    return model
