"""The domain objects one server holds, built from Settings: the store, the model service with its registry and
downloads, the responses service on both, and the ingestion and search of vector stores."""

from __future__ import annotations

from dataclasses import dataclass

from jan_server.models.aliases import Aliases
from jan_server.models.downloads import DownloadManager, resume_interrupted
from jan_server.models.lifecycle import ModelManager
from jan_server.models.disk_cache import DiskCache
from jan_server.models.prompt_cache import HostCache, MiB, host_budget
from jan_server.models.registry import Registry
from jan_server.models.remote import KeyVariables, Upstreams
from jan_server.models.residency import Residency
from jan_server.responses.service import ResponseService
from jan_server.retrieval.ingest import Ingestion
from jan_server.retrieval.search import Searcher
from jan_server.settings import Settings
from jan_server.storage.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    registry: Registry
    models: ModelManager
    downloads: DownloadManager
    responses: ResponseService
    ingestion: Ingestion
    search: Searcher

    @classmethod
    def open(cls, settings: Settings) -> "Services":
        settings.models_dir.mkdir(parents=True, exist_ok=True)  # and the data dir it is in
        registry = Registry(settings.models_dir)
        downloads = DownloadManager(settings.egress)
        models = ModelManager(
            registry, n_threads=settings.n_threads, max_queued_requests=settings.max_queued_requests, downloads=downloads,
            loaded=Residency(settings.max_loaded_models, settings.idle_timeout),
            upstreams=Upstreams(settings.remote_connect_timeout, settings.remote_read_timeout, egress=settings.egress,
                                key_variables=KeyVariables(settings.remote_key_prefix, settings.remote_key_envs)),
            prompt_cache=HostCache(host_budget(settings.cache_ram), disk=DiskCache(settings.data_dir / "prompt-cache", settings.cache_disk * MiB)
                                   if settings.cache_disk else None),
            deterministic=settings.deterministic,
            aliases=Aliases(settings.model_aliases),
        )
        store = Store.open(settings.sqlalchemy_url)
        search = Searcher(store, models)
        responses = ResponseService(store, models, search)
        responses.fail_interrupted()  # before any request: a new background response is not one a stop left
        return cls(settings=settings, store=store, registry=registry, models=models, downloads=downloads, responses=responses,
                   ingestion=Ingestion(store, models), search=search)

    def start(self) -> None:
        """Start background work (called once the server is up): resume the downloads a stop interrupted, and the
        ingestion of vector stores' files a stop left in progress."""
        resume_interrupted(self.registry, self.downloads)
        self.ingestion.start()

    def close(self) -> None:
        self.downloads.close()
        self.ingestion.close()  # before the models: it may be embedding on one
        self.models.close()
        self.responses.close()  # after the models: their close cancels the background jobs
        self.store.close()
