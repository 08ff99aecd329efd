"""Every setting of the server, in one place: defaults, then environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from jan_server.models.egress import EGRESS


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "jan-server"


def split_list(value: str | None) -> tuple[str, ...] | None:
    """`a, b,c` -> ("a", "b", "c"); None or only blanks -> None (not set)."""
    items = tuple(item.strip() for item in (value or "").split(",") if item.strip())
    return items or None


def env_int(env, name: str) -> int | None:
    return int(env[name]) if env.get(name) else None


def env_float(env, name: str) -> float | None:
    return float(env[name]) if env.get(name) else None


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1337
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    #: llama.cpp threads that all running models share (see jan_server.models.loading.ThreadBudget); None: every core.
    n_threads: int | None = None
    #: Chat requests allowed to wait per model before the server answers 429.
    max_queued_requests: int = 32
    #: Worker threads bridging Flask to ASGI for chat and model requests; open streams each hold one, so keep well above the queue.
    wsgi_workers: int = 64
    #: Worker threads for every other request (store, /health) when the database is not SQLite; with SQLite they
    #: run on the event loop (see jan_server.web.bridge).
    quick_workers: int = 4
    #: Bearer keys that /v1 requests must carry; empty means the API is open (and loopback-only).
    api_keys: tuple[str, ...] = ()
    #: Serve an open API (no key) on an address other than loopback.
    allow_remote: bool = False
    #: Origins browsers may call the API from; empty means any http(s)://localhost or 127.0.0.1 origin.
    cors_origins: tuple[str, ...] = ()
    #: Largest request body accepted; bigger ones get 413.
    max_body_bytes: int = 8 * 1024 * 1024
    #: Seconds to wait for a remote engine (a model with `"engine": "openai"`) to accept a connection, and for
    #: each read from it: a non-streamed completion sends nothing until it is done, so the read limit is long.
    remote_connect_timeout: float = 10.0
    remote_read_timeout: float = 300.0
    #: The environment variables a remote model's `api_key_env` may name: those starting with this prefix (none if
    #: it is empty) and those listed (see jan_server.models.remote.KeyVariables).
    remote_key_prefix: str = "JAN_REMOTE_"
    remote_key_envs: tuple[str, ...] = ()
    #: Where downloads and remote engines may connect: `lan`, `public` or `loopback` (see jan_server.models.egress).
    egress: str = "lan"
    #: Most local models loaded at once; starting one more stops the least recently used idle one. None: no limit.
    max_loaded_models: int | None = None
    #: Seconds a local model may sit idle before it is stopped. None: never (off by default: reloading costs the
    #: next request seconds, and on a machine of its own a model's memory is better kept than freed).
    idle_timeout: float | None = None

    def __post_init__(self):
        if self.egress not in EGRESS:
            raise ValueError(f"egress must be one of {', '.join(EGRESS)}, not {self.egress!r}")

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jan.db'}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Settings from JAN_* environment variables; keyword overrides (CLI flags) that are not None win."""
        env = os.environ if environ is None else environ
        settings = cls()
        from_env = {
            "host": env.get("JAN_API_HOST"),
            "port": env_int(env, "JAN_API_PORT"),
            "data_dir": Path(env["JAN_DATA_DIR"]) if env.get("JAN_DATA_DIR") else None,
            "database_url": env.get("JAN_DATABASE_URL"),
            "n_threads": env_int(env, "JAN_N_THREADS"),
            "max_queued_requests": env_int(env, "JAN_MAX_QUEUED_REQUESTS"),
            "api_keys": split_list(env.get("JAN_API_KEY")),
            "allow_remote": env.get("JAN_ALLOW_REMOTE", "").lower() in ("1", "true", "yes") or None,
            "cors_origins": split_list(env.get("JAN_CORS_ORIGINS")),
            "max_body_bytes": env_int(env, "JAN_MAX_BODY_BYTES"),
            "remote_connect_timeout": env_float(env, "JAN_REMOTE_CONNECT_TIMEOUT"),
            "remote_read_timeout": env_float(env, "JAN_REMOTE_READ_TIMEOUT"),
            "remote_key_prefix": env.get("JAN_REMOTE_KEY_PREFIX"),
            "remote_key_envs": split_list(env.get("JAN_REMOTE_KEY_ENVS")),
            "egress": env.get("JAN_EGRESS"),
            "max_loaded_models": env_int(env, "JAN_MAX_LOADED_MODELS"),
            "idle_timeout": env_float(env, "JAN_IDLE_TIMEOUT"),
        }
        chosen = {k: v for k, v in from_env.items() if v is not None}
        chosen.update((k, v) for k, v in overrides.items() if v is not None)
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"]).expanduser()
        return replace(settings, **chosen)
