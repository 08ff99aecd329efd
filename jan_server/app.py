"""The app factory: Connexion loads openapi.yaml and dispatches each operationId to handlers/<tag>.py."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sysconfig
from pathlib import Path

import connexion
import yaml
from a2wsgi import WSGIMiddleware
from connexion.apps.flask import FlaskOperation
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import SyncParameterDecorator
from connexion.exceptions import ProblemException
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.utils import is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.exceptions import HTTPException

from jan_server import docs, security
from jan_server.disconnect import DisconnectWatcher
from jan_server.errors import ApiError, RateLimitError, error_body
from jan_server.services import Services
from jan_server.settings import Settings
from jan_server.slash_aliases import SlashAliasMiddleware, slash_aliases

log = logging.getLogger(__name__)

API_BASE_PATH = "/v1"

def spec_path() -> Path:
    """openapi.yaml in a checkout (editable install), else the copy a plain install put in <prefix>/share."""
    checkout = Path(__file__).resolve().parent.parent / "openapi.yaml"
    if checkout.exists():
        return checkout
    return Path(sysconfig.get_path("data")) / "share" / "jan-server" / "openapi.yaml"


class TagResolver(Resolver):
    """operationId `createThread` tagged `Threads` resolves to `jan_server.handlers.threads.create_thread`."""

    def resolve_operation_id(self, operation) -> str:
        tag = operation._operation["tags"][0].lower()  # Connexion keeps the operation's raw spec here
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation.operation_id).lower()
        return f"jan_server.handlers.{tag}.{name}"


class NamedParameterValidator(ParameterValidator):
    """Connexion's parameter errors omit the parameter's name; OpenAI clients expect it (as `param`).

    Connexion also builds a JSON Schema validator, from a deep copy of the parameter, for each parameter of
    each request; here each parameter's validator is built once (see `schema_validator`)."""

    @staticmethod
    def validate_parameter(parameter_type, value, param, param_name=None):
        if value is None or (is_nullable(param) and is_null(value)):
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        try:
            schema_validator(param).validate(value)
        except ValidationError as exception:
            error = str(exception)
            return error if f"parameter '{param['name']}'" in error else f"Invalid {parameter_type} parameter '{param['name']}': {error}"
        return None


_SCHEMA_VALIDATORS: dict[int, tuple[dict, Draft4Validator]] = {}


def schema_validator(param: dict) -> Draft4Validator:
    """The validator of a spec parameter's schema, built on first use. The cache holds the parameter itself
    so its id cannot be reused by another object."""
    cached = _SCHEMA_VALIDATORS.get(id(param))
    if cached is None or cached[0] is not param:
        validator = Draft4Validator(param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER)
        cached = _SCHEMA_VALIDATORS[id(param)] = (param, validator)
    return cached[1]


class PreparedParameterDecorator(SyncParameterDecorator):
    """Remembers the Python names of parameters: Connexion runs each through inflection's regexes per request."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sanitize_fn = functools.lru_cache(maxsize=256)(self.sanitize_fn)


class PreparedFlaskDecorator(FlaskDecorator):
    """Connexion's FlaskOperation wraps its handler in the parameter and response decorators again on
    every request (inspecting the handler's signature each time); this builds that chain once."""

    _parameter_decorator_cls = PreparedParameterDecorator

    def __call__(self, function):
        decorated = self.decorate(function)

        @functools.wraps(function)
        def wrapper(*_args, **_kwargs):
            return decorated(self.framework.get_request(uri_parser=self.uri_parser))

        return wrapper


def prepare_operations(flask_app) -> None:
    """Swap each Connexion operation view for its handler wrapped once by PreparedFlaskDecorator."""
    for endpoint, view in flask_app.view_functions.items():
        if isinstance(view, FlaskOperation):
            decorator = PreparedFlaskDecorator(pythonic_params=view.pythonic_params, jsonifier=view.jsonifier)
            flask_app.view_functions[endpoint] = decorator(view._fn)


def json_response(status: int, body: dict, headers: dict | None = None) -> ConnexionResponse:
    return ConnexionResponse(status_code=status, mimetype="application/json", body=json.dumps(body), headers=headers or {})


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


def _param_from_detail(detail: str) -> str | None:
    """Name the offending field in Connexion's validation messages, as OpenAI's `param` does."""
    for pattern in (r" - '([^']+)'$", r"parameter '([^']+)'", r"^'([^']+)' is a required property"):
        match = re.search(pattern, detail)
        if match:
            return match.group(1)
    return None


def _http_error(status: int, message: str, headers=None) -> ConnexionResponse:
    message = message.split("\n\n")[0]  # drop jsonschema's dump of the schema and instance
    error_type = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    param = _param_from_detail(message) if status == 400 else None
    body = error_body(message, error_type, param, _STATUS_CODES.get(status))
    return json_response(status, body, dict(headers or {}))


def handle_api_error(_request: ConnexionRequest, exc: ApiError) -> ConnexionResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitError) else {}
    return json_response(exc.status, exc.to_dict(), headers)


def handle_problem(_request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    return _http_error(exc.status, str(exc.detail or exc.title), exc.headers)


def handle_http_exception(_request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    return _http_error(exc.status_code, str(exc.detail), exc.headers)


def handle_crash(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error", exc_info=exc)
    return json_response(500, error_body("The server had an error while processing your request.", "server_error"))


def create_app(settings: Settings) -> connexion.FlaskApp:
    services = Services.open(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        services.start()
        prepare_operations(app.app)  # Connexion registers the operations' views when it builds its stack, just before this
        try:
            yield
        finally:
            services.close()

    app = connexion.FlaskApp(__name__, lifespan=lifespan)
    # FlaskApp's bridge has 10 worker threads by default; every open stream holds one.
    app._middleware_app.asgi_app = WSGIMiddleware(app.app.wsgi_app, workers=settings.wsgi_workers)
    app.add_middleware(DisconnectWatcher, MiddlewarePosition.BEFORE_EXCEPTION)  # see jan_server.disconnect
    security.install(app, settings)
    spec_file = spec_path()
    spec = yaml.safe_load(spec_file.read_text())
    app.add_middleware(
        SlashAliasMiddleware, MiddlewarePosition.BEFORE_ROUTING, patterns=slash_aliases(API_BASE_PATH, spec["paths"])
    )
    app.add_api(
        spec_file,
        base_path=API_BASE_PATH,
        resolver=TagResolver(),
        strict_validation=True,
        pythonic_params=True,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=False),
        validator_map={**VALIDATOR_MAP, "parameter": NamedParameterValidator},
        jsonifier=Jsonifier(json),  # Connexion's default indents, which makes json fall back to its pure-Python encoder
    )
    app.app.extensions["jan_server"] = services  # read by jan_server.handlers.services()
    docs.register(app.app)
    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(ProblemException, handle_problem)
    app.add_error_handler(HTTPException, handle_http_exception)
    app.add_error_handler(Exception, handle_crash)
    return app
