"""Remote engines: models served by another OpenAI-compatible server (vLLM, llama-server, another jan-server),
named by a model.json with `"engine": "openai"` and `settings` `{base_url, model, api_key_env}`.

A request is forwarded as the client sent it with the upstream's model id in place of ours, so whatever the spec
let through (tools, logprobs, n, ...) reaches the upstream; its answer comes back as the upstream sent it (its
`model` too: like OpenAI's answers, it names what served the request), a stream event by event. Every remote model
shares one pooled httpx client. The API key is read from the environment variable named by `api_key_env` at each
request, so it is never stored or shown; an unset variable sends no key.

Errors keep OpenAI's shape: the upstream's 4xx as it sent it (status, message, code), its 5xx or an answer that
is not JSON 502 `upstream_error`, an upstream that cannot be reached 502 `upstream_unavailable`, and one that
does not answer within the connect or read timeout 504 `upstream_timeout`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import httpx

from jan_server.errors import ApiError, BadGatewayError, GatewayTimeoutError, UpstreamError
from jan_server.models.registry import REMOTE_ENGINE, ModelRecord

log = logging.getLogger(__name__)

#: The fields of a remote model's `settings` (POST /v1/models takes the same).
SETTING_KEYS = ("base_url", "model", "api_key_env")


def remote_manifest(request: dict) -> dict:
    """The model.json of a remote model added through POST /v1/models."""
    settings = {key: request["settings"][key] for key in SETTING_KEYS if request["settings"].get(key)}
    return {"name": request.get("name") or request["id"], "engine": REMOTE_ENGINE, "format": "api", "owned_by": "remote", "settings": settings}


@dataclass
class Upstream:
    """One remote model's upstream, and whether it answered the last request sent to it."""

    model_id: str
    base_url: str
    model: str
    api_key_env: str | None
    client: httpx.Client = field(repr=False)
    answered: bool | None = None
    checked_at: int | None = None

    @property
    def key(self) -> tuple:
        return self.base_url, self.model, self.api_key_env

    def status(self) -> dict:
        """What the model object shows: whether the upstream answered last time (None: not asked yet), and when."""
        return {"upstream_answered": self.answered, "upstream_checked_at": self.checked_at}

    def post(self, path: str, body: dict) -> dict:
        """Forward a request and return the upstream's JSON answer."""
        response = self._send(self._request("POST", path, body), stream=False)
        try:
            return response.json()
        except ValueError:
            raise BadGatewayError(f"The upstream of model '{self.model_id}' answered with something that is not JSON.", code="upstream_error") from None

    def stream(self, path: str, body: dict) -> Iterator[bytes]:
        """Forward a streamed request: its status is checked before this returns (an error is raised as any other),
        then the generator yields each Server-Sent Event whole. Closing it closes the upstream request."""
        response = self._send(self._request("POST", path, body), stream=True)
        return self._events(response)

    def check(self) -> None:
        """Ask the upstream for its models (what starting a remote model does): raises if it does not answer."""
        self._send(self._request("GET", "models"), stream=False)

    def _request(self, method: str, path: str, body: dict | None = None) -> httpx.Request:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        payload = None if body is None else {**body, "model": self.model}
        return self.client.build_request(method, f"{self.base_url.rstrip('/')}/{path}", json=payload, headers=headers)

    def _send(self, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            response = self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        self._answered(True)
        if response.is_success:
            return response
        try:
            response.read()
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        finally:
            response.close()
        raise self._error(response)

    def _events(self, response: httpx.Response) -> Iterator[bytes]:
        lines: list[str] = []
        try:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                elif lines:
                    yield ("\n".join(lines) + "\n\n").encode()
                    lines = []
            if lines:
                yield ("\n".join(lines) + "\n\n").encode()
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        finally:
            response.close()

    def _answered(self, answered: bool) -> None:
        self.answered, self.checked_at = answered, int(time.time())

    def _failed(self, exc: httpx.HTTPError) -> ApiError:
        """The error for a request that got no (whole) answer."""
        self._answered(False)
        where = f"the upstream of model '{self.model_id}' ({self.base_url})"
        log.warning("%s failed: %r", where, exc)
        if isinstance(exc, httpx.TimeoutException):
            return GatewayTimeoutError(f"No answer in time from {where}.")
        return BadGatewayError(f"Could not reach {where}: {exc.__class__.__name__}.")

    def _error(self, response: httpx.Response) -> ApiError:
        """The upstream's error answer: a 4xx passed on as it is, anything else a 502."""
        try:
            error = response.json()["error"]
            message = error["message"] if isinstance(error, dict) else str(error)
        except (ValueError, KeyError, TypeError):
            error, message = {}, response.text[:500] or response.reason_phrase
        if not isinstance(error, dict):
            error = {}
        if 400 <= response.status_code < 500:
            retry_after = response.headers.get("Retry-After")
            return UpstreamError(
                response.status_code, message, type=error.get("type") or "invalid_request_error", param=error.get("param"),
                code=error.get("code"), retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return BadGatewayError(f"The upstream of model '{self.model_id}' failed ({response.status_code}): {message}", code="upstream_error")


class Upstreams:
    """The one pooled client, and the Upstream of each remote model used so far (kept for its last status)."""

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 300.0):
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self._upstreams: dict[str, Upstream] = {}
        self._lock = threading.Lock()

    def cached(self, model_id: str) -> Upstream | None:
        return self._upstreams.get(model_id)

    def get(self, record: ModelRecord) -> Upstream:
        """The record's Upstream: the one used before, unless its settings changed since."""
        settings = record.settings
        fresh = Upstream(record.id, str(settings.get("base_url") or ""), str(settings.get("model") or ""), settings.get("api_key_env"), self.client)
        with self._lock:
            known = self._upstreams.get(record.id)
            if known is None or known.key != fresh.key:
                self._upstreams[record.id] = known = fresh
            return known

    def forget(self, model_id: str) -> None:
        self._upstreams.pop(model_id, None)

    def close(self) -> None:
        self.client.close()

