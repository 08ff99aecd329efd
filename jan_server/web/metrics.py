"""GET /metrics: the server's Prometheus metrics, through prometheus_client, in its text format (version 0.0.4).

- Requests by operationId and status, and their latency per operation (until the response's last byte, so a
  stream counts whole), recorded by RequestMetrics, the outermost ASGI middleware: it sees every answer, the
  guards' 401/413/421 too. It reads the operation Connexion's router found (jan_server.web.run_modes); requests
  no operation matches (/health, /docs, unknown paths) count as operation `none`.
- Prompt and generated tokens per model, time to first token and the time between tokens: an observer of the
  model service's usage events (jan_server.models.usage).
- Model states, queued requests, busy slots, and download progress: read from the model service and the
  downloads when scraped (ModelCollector), so they are never a second copy of that state.

Prometheus scrapes `/metrics` (its default path); the spec names the operation under /v1 like every other, and
RequestMetrics serves `/metrics` as `/v1/metrics`, before the guards, so the API key covers both.
"""

from __future__ import annotations

import time

from connexion import FlaskApp
from connexion.middleware import MiddlewarePosition
from flask import Response, current_app
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from jan_server.models.downloads import DownloadManager
from jan_server.models.lifecycle import ModelManager
from jan_server.services import Services
from jan_server.web.dispatch import handler_name
from jan_server.web.run_modes import routed_operation
from jan_server.web.spec_paths import API_BASE_PATH, HTTP_METHODS

#: Where Prometheus looks by default, served as the spec's operation (under /v1, as every other).
SCRAPE_PATH = "/metrics"
SERVED_PATH = f"{API_BASE_PATH}{SCRAPE_PATH}"
EXTENSION_KEY = "jan_server.metrics"  # the app's Metrics, in flask_app.extensions
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """One server's registry and its metrics; also the model service's usage observer."""

    def __init__(self, services: Services, paths: dict):
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        registry.register(ModelCollector(services.models, services.downloads))
        self.operation_ids = {
            handler_name(operation["tags"][0], operation["operationId"]): operation["operationId"]
            for item in paths.values() for method, operation in item.items() if method in HTTP_METHODS
        }
        self.requests = Counter("jan_requests", "HTTP requests answered, by operationId and status.", ["operation", "status"], registry=registry)
        self.latency = Histogram("jan_request_duration_seconds", "Time from a request's arrival to its response's last byte, per operationId.",
                                 ["operation"], buckets=REQUEST_BUCKETS, registry=registry)
        self.prompt_tokens = Counter("jan_prompt_tokens", "Prompt tokens of the chat requests each model accepted.", ["model"], registry=registry)
        self.generated_tokens = Counter("jan_generated_tokens", "Tokens each model generated.", ["model"], registry=registry)
        self.first_token = Histogram("jan_time_to_first_token_seconds", "Time from a request entering the model's queue to its first token.",
                                     ["model"], buckets=FIRST_TOKEN_BUCKETS, registry=registry)
        self.token_gap = Histogram("jan_time_per_output_token_seconds", "Time between one generated token of a request and the next.",
                                   ["model"], buckets=TOKEN_BUCKETS, registry=registry)
        services.models.usage.observers.append(self)

    def operation(self, scope: Scope) -> str:
        return self.operation_ids.get(routed_operation(scope), "none")

    def prompt(self, model_id: str, tokens: int) -> None:
        self.prompt_tokens.labels(model_id).inc(tokens)

    def token(self, model_id: str, seconds: float, first: bool) -> None:
        self.generated_tokens.labels(model_id).inc()
        (self.first_token if first else self.token_gap).labels(model_id).observe(seconds)


class ModelCollector(Collector):
    """What the model service and the downloads say at scrape time, per model."""

    def __init__(self, models: ModelManager, downloads: DownloadManager):
        self.models = models
        self.downloads = downloads

    def describe(self):
        return self.families().values()

    def collect(self):
        families = self.families()
        for model in self.models.list()["data"]:
            labels, metadata = [model["id"]], model["metadata"]
            families["state"].add_metric([model["id"], model["state"]], 1)
            for name, key in (("queued", "queued_requests"), ("busy", "busy_slots"), ("slots", "n_parallel")):
                if model["state"] == "running" and key in metadata:
                    families[name].add_metric(labels, metadata[key])
        for model_id, status in self.downloads.statuses().items():
            families["downloaded"].add_metric([model_id], status["bytes_downloaded"])
            if status["bytes_total"] is not None:
                families["size"].add_metric([model_id], status["bytes_total"])
        return families.values()

    @staticmethod
    def families() -> dict[str, GaugeMetricFamily]:
        return {
            "state": GaugeMetricFamily("jan_model_state", "1 for the state each model is in (running, downloaded, downloading, error, ...).", labels=["model", "state"]),
            "queued": GaugeMetricFamily("jan_model_queued_requests", "Chat requests waiting for a slot of a running model.", labels=["model"]),
            "busy": GaugeMetricFamily("jan_model_busy_slots", "Slots of a running model generating now.", labels=["model"]),
            "slots": GaugeMetricFamily("jan_model_slots", "Slots of a running model (n_parallel).", labels=["model"]),
            "downloaded": GaugeMetricFamily("jan_download_bytes", "Bytes on disk of each model's download (the last this process ran).", labels=["model"]),
            "size": GaugeMetricFamily("jan_download_size_bytes", "The size of each model's download, where the server told it.", labels=["model"]),
        }


class RequestMetrics:
    """Count and time every HTTP request (see the module's docstring); serve SCRAPE_PATH as the spec's operation."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # The middlewares below copy the scope but share its dicts, so the router's entry in "extensions" shows here.
        scope = {**scope, "extensions": scope.get("extensions") or {}}
        if scope["path"] == SCRAPE_PATH:
            scope.update(path=SERVED_PATH, raw_path=SERVED_PATH.encode())
        started, status = time.perf_counter(), 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            operation = self.metrics.operation(scope)
            self.metrics.requests.labels(operation, str(status)).inc()
            self.metrics.latency.labels(operation).observe(time.perf_counter() - started)


def install(app: FlaskApp, services: Services, paths: dict) -> None:
    """Add RequestMetrics outermost (call before any other middleware is added) and keep the Metrics for the handler."""
    metrics = Metrics(services, paths)
    app.add_middleware(RequestMetrics, position=MiddlewarePosition.BEFORE_EXCEPTION, metrics=metrics)
    app.app.extensions[EXTENSION_KEY] = metrics


def response() -> Response:
    """The scrape: every metric in Prometheus's text format 0.0.4."""
    return Response(generate_latest(current_app.extensions[EXTENSION_KEY].registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
