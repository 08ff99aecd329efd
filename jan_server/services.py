"""The domain objects one server holds, built from Settings: the store, the model registry and engine, downloads."""

from __future__ import annotations

from dataclasses import dataclass

from jan_server.settings import Settings
from jan_server.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store

    @classmethod
    def open(cls, settings: Settings) -> "Services":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings=settings, store=Store.open(settings.sqlalchemy_url))

    def start(self) -> None:
        """Start background work (called once the server is up)."""

    def close(self) -> None:
        self.store.close()
