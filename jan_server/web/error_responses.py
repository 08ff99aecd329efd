"""Responses for every error the app can raise, in OpenAI's shape: domain ApiErrors, Connexion's problems
(validation 400, 415, ...), routing's 404/405, and crashes (500, logged, never a traceback to the client)."""

from __future__ import annotations

import json
import logging
import re

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException

from jan_server.errors import ApiError, error_body
from jan_server.web.spec_paths import AllowedMethods

log = logging.getLogger(__name__)


def json_response(status: int, body: dict, headers: dict | None = None) -> ConnexionResponse:
    return ConnexionResponse(status_code=status, mimetype="application/json", body=json.dumps(body), headers=headers or {})


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


def param_from_detail(detail: str) -> str | None:
    """Name the offending field in Connexion's validation messages, as OpenAI's `param` does."""
    for pattern in (r" - '([^']+)'$", r"parameter '([^']+)'", r"^'([^']+)' is a required property", r"\('([^']+)'[^)]* unexpected\)"):
        match = re.search(pattern, detail)
        if match:
            return match.group(1)
    return None


def _http_error(status: int, message: str, headers=None) -> ConnexionResponse:
    message = message.split("\n\n")[0]  # drop jsonschema's dump of the schema and instance
    error_type = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    param = param_from_detail(message) if status == 400 else None
    body = error_body(message, error_type, param, _STATUS_CODES.get(status))
    return json_response(status, body, dict(headers or {}))


def handle_api_error(_request: ConnexionRequest, exc: ApiError) -> ConnexionResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return json_response(exc.status, exc.to_dict(), headers)


def handle_problem(_request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    return _http_error(exc.status, str(exc.detail or exc.title), exc.headers)


def handle_crash(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error", exc_info=exc)
    return json_response(500, error_body("The server had an error while processing your request.", "server_error"))


def install(app, allowed_methods: AllowedMethods) -> None:
    def handle_http_exception(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
        headers = dict(exc.headers or {})
        methods = allowed_methods(request.url.path) if exc.status_code == 405 else []
        if methods:
            headers["Allow"] = ", ".join(methods)
        return _http_error(exc.status_code, str(exc.detail), headers)

    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(ProblemException, handle_problem)
    app.add_error_handler(HTTPException, handle_http_exception)
    app.add_error_handler(Exception, handle_crash)
