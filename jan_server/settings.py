"""Every setting of the server, in one place: defaults, then environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "jan-server"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1337
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    #: Threads per model for llama.cpp; None means every core of the machine.
    n_threads: int | None = None
    #: Chat requests allowed to wait per model before the server answers 429.
    max_queued_requests: int = 32
    #: Worker threads bridging Flask to ASGI; open streams each hold one, so keep well above the queue.
    wsgi_workers: int = 64

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
            "port": int(env["JAN_API_PORT"]) if env.get("JAN_API_PORT") else None,
            "data_dir": Path(env["JAN_DATA_DIR"]) if env.get("JAN_DATA_DIR") else None,
            "database_url": env.get("JAN_DATABASE_URL"),
            "n_threads": int(env["JAN_N_THREADS"]) if env.get("JAN_N_THREADS") else None,
        }
        chosen = {k: v for k, v in {**from_env, **overrides}.items() if v is not None}
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"]).expanduser()
        return replace(settings, **chosen)
