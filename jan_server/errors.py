"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, each with its HTTP status.

Domain modules raise these; the app turns them (and Connexion's own problems) into responses.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    type = "server_error"
    #: Seconds after which a retry may succeed, sent as Retry-After; None for errors a retry will not fix.
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class InvalidRequestError(ApiError):
    status = 400
    type = "invalid_request_error"


class NotFoundError(ApiError):
    status = 404
    type = "invalid_request_error"

    def __init__(self, kind: str, object_id: str, *, param: str | None = None):
        super().__init__(f"No {kind} found with id '{object_id}'.", param=param, code=f"{kind}_not_found")


class ConflictError(ApiError):
    status = 409
    type = "invalid_request_error"


class RateLimitError(ApiError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = "queue_full"):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ServerError(ApiError):
    status = 500
    type = "server_error"


class UnavailableError(ApiError):
    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(ApiError):
    """An error a remote engine answered with, passed on with its status (a 4xx; see jan_server.models.remote)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: int | None = None):
        super().__init__(message, param=param, code=code)
        self.status = status
        self.type = type
        self.retry_after = retry_after


class BadGatewayError(ApiError):
    """A remote engine could not be reached, or failed (5xx, or an answer that is not OpenAI's)."""

    status = 502
    type = "server_error"

    def __init__(self, message: str, *, code: str = "upstream_unavailable"):
        super().__init__(message, code=code)


class GatewayTimeoutError(ApiError):
    """A remote engine did not answer within the server's connect or read timeout."""

    status = 504
    type = "server_error"

    def __init__(self, message: str):
        super().__init__(message, code="upstream_timeout")
