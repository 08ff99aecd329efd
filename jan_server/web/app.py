"""The app factory: Connexion loads the bundled openapi.yaml (see spec_bundle) and dispatches each operationId to handlers/<tag>.py."""

from __future__ import annotations

import contextlib
import gc
import json

import connexion
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions

from jan_server.web import console, error_responses, metrics, security, uploads
from jan_server.web.anthropic_errors import AnthropicConventions
from jan_server.web.disconnect import DisconnectWatcher
from jan_server.web.bridge import SplitWSGIBridge
from jan_server.web.dispatch import VALIDATORS, TagResolver, connexion_middlewares, prepare_operations
from jan_server.web.responses_socket import ResponsesSocket
from jan_server.web.run_modes import RunModes
from jan_server.services import Services
from jan_server.settings import Settings
from jan_server.web.spec_bundle import bundle
from jan_server.web.spec_paths import API_BASE_PATH, AllowedMethods, SlashAliasMiddleware, slash_aliases


def create_app(settings: Settings) -> connexion.FlaskApp:
    services = Services.open(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        services.start()
        prepare_operations(app.app)  # Connexion registers the operations' views when it builds its stack, just before this
        gc.collect()  # start-up's garbage goes first, then what remains lives as long as the server:
        gc.freeze()  # spare the collector rescanning it on every full pass
        try:
            yield
        finally:
            services.close()

    app = connexion.FlaskApp(__name__, lifespan=lifespan, middlewares=connexion_middlewares())
    spec = bundle()
    metrics.install(app, services, spec["paths"])  # first: outermost, it sees every answer
    app.add_middleware(AnthropicConventions, position=MiddlewarePosition.BEFORE_EXCEPTION)  # outside the guards: their errors too
    security.install(app, settings, uploads.middleware(settings, API_BASE_PATH, spec["paths"]))
    app.add_api(
        spec,
        base_path=API_BASE_PATH,
        resolver=TagResolver(),
        strict_validation=True,
        pythonic_params=True,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False),  # served bundled, by console
        validator_map=VALIDATORS,
        jsonifier=Jsonifier(json),  # Connexion's default indents, which makes json fall back to its pure-Python encoder
    )
    paths = app.middleware.apis[-1].specification["paths"]  # resolved by add_api, rather than resolved twice
    run_modes = RunModes(paths)
    body_schema = paths["/responses"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    app.add_middleware(ResponsesSocket, MiddlewarePosition.BEFORE_EXCEPTION, service=services.responses, body_schema=body_schema)  # inside the guards
    app._middleware_app.asgi_app = SplitWSGIBridge(  # replaces FlaskApp's own bridge: see jan_server.web.bridge
        app.app.wsgi_app, run_modes.on_worker, settings.wsgi_workers,
        inline=settings.sqlalchemy_url.startswith("sqlite"), quick_workers=settings.quick_workers,
    )
    # After routing (it needs the operation) and request validation (a request refused there holds nothing).
    app.add_middleware(DisconnectWatcher, MiddlewarePosition.BEFORE_CONTEXT, watched=run_modes.on_worker)
    app.add_middleware(SlashAliasMiddleware, MiddlewarePosition.BEFORE_ROUTING, patterns=slash_aliases(API_BASE_PATH, paths))
    app.app.extensions["jan_server"] = services  # read by jan_server.handlers.services()
    console.register(app.app, spec)
    error_responses.install(app, AllowedMethods(API_BASE_PATH, paths))
    return app
