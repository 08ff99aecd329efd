"""Remote engines: models served by another OpenAI-compatible server (vLLM, llama-server, another jan-server),
named by a model.json with `"engine": "openai"` and `settings` `{base_url, model, api_key_env}`.

A request is forwarded as the client sent it with the upstream's model id in place of ours, so whatever the spec
let through (tools, logprobs, n, ...) reaches the upstream; its answer comes back as the upstream sent it (its
`model` too: like OpenAI's answers, it names what served the request), a stream event by event. Every remote model
shares one pooled httpx client. The API key is read from the environment variable named by `api_key_env` at each
request, so it is never stored or shown; an unset variable sends no key. Only the variables the operator allows
(KeyVariables) may be named, and the client connects only where the egress setting allows
(jan_server.models.egress): anything else is a 400 naming `api_key_env` or `base_url`, when the model is added
and at each request (for a model.json written by hand), before anything is sent.

Errors keep OpenAI's shape: the upstream's 4xx as it sent it (status, and an OpenAI error's message and code), its
5xx or an answer that is not JSON 502 `upstream_error`, an upstream that cannot be reached 502
`upstream_unavailable`, and one that does not answer within the connect or read timeout 504 `upstream_timeout`.
An error answer that is not OpenAI's JSON is not echoed beyond its status.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import httpcore
import httpx

from jan_server.errors import ApiError, BadGatewayError, GatewayTimeoutError, InvalidRequestError, UpstreamError
from jan_server.models import egress
from jan_server.models.registry import REMOTE_ENGINE, ModelRecord

log = logging.getLogger(__name__)

#: The fields of a remote model's `settings` (POST /v1/models takes the same).
SETTING_KEYS = ("base_url", "model", "api_key_env")


def remote_manifest(request: dict) -> dict:
    """The model.json of a remote model added through POST /v1/models."""
    settings = {key: request["settings"][key] for key in SETTING_KEYS if request["settings"].get(key)}
    return {"name": request.get("name") or request["id"], "engine": REMOTE_ENGINE, "format": "api", "owned_by": "remote", "settings": settings}


@dataclass(frozen=True)
class KeyVariables:
    """The environment variables a remote model's `api_key_env` may name: those starting with `prefix` (none when
    it is empty) and those in `names` (--remote-key-prefix, --remote-key-env). Any other variable of the server's
    (its own API keys, cloud credentials) must not go to whatever base_url a key holder gives."""

    prefix: str = "JAN_REMOTE_"
    names: tuple[str, ...] = ()

    def check(self, name) -> None:
        """A 400 naming `api_key_env` unless the variable `name` may be read (a model.json may hold anything)."""
        if isinstance(name, str) and ((self.prefix and name.startswith(self.prefix)) or name in self.names):
            return
        allowed = f"one that starts with {self.prefix}, or " if self.prefix else ""
        raise InvalidRequestError(
            f"api_key_env {name!r} is not an environment variable this server lets remote models read: name {allowed}"
            "one the server was started with --remote-key-env for.", param="api_key_env", code="api_key_env_not_allowed",
        )


class _Connections(httpcore.SyncBackend):
    """httpcore's sockets, opened only to the addresses egress allows (the host resolved once, its addresses tried in
    turn as socket.create_connection does); a refused host raises egress.Refused before any connection."""

    def __init__(self, egress: str):
        self.egress = egress

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = egress.addresses(host, self.egress)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error


class _Transport(httpx.HTTPTransport):
    """httpx's transport over connections _Connections opens. HTTPTransport takes no network backend, so its pool
    (`_pool`) is replaced by one built as it builds it, with one."""

    def __init__(self, egress: str, limits: httpx.Limits):
        super().__init__(limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Connections(egress),
        )


@dataclass
class Upstream:
    """One remote model's upstream, and whether it answered the last request sent to it."""

    model_id: str
    base_url: str
    model: str
    api_key_env: str | None
    client: httpx.Client = field(repr=False)
    key_variables: KeyVariables = field(default_factory=KeyVariables, repr=False)
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
        if self.api_key_env:
            self.key_variables.check(self.api_key_env)
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        payload = None if body is None else {**body, "model": self.model}
        return self.client.build_request(method, f"{self.base_url.rstrip('/')}/{path}", json=payload, headers=headers)

    def _send(self, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            response = self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        except egress.Refused as exc:
            raise InvalidRequestError(f"The host of model '{self.model_id}''s base_url is, or resolves to, {exc}.",
                                      param="base_url", code="address_refused") from None
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
        where = f"the upstream of model '{self.model_id}' ({egress.shown(self.base_url)})"
        log.warning("%s failed: %r", where, exc)
        if isinstance(exc, httpx.TimeoutException):
            return GatewayTimeoutError(f"No answer in time from {where}.")
        return BadGatewayError(f"Could not reach {where}: {exc.__class__.__name__}.")

    def _error(self, response: httpx.Response) -> ApiError:
        """The upstream's error answer: a 4xx passed on as it is, anything else a 502."""
        try:
            error = response.json()["error"]
            message = error["message"] if isinstance(error, dict) else str(error)
        except (ValueError, KeyError, TypeError):  # not an OpenAI API: what it said is not passed on
            error, message = {}, f"The upstream of model '{self.model_id}' answered with a {response.status_code // 100}xx error."
        if not isinstance(error, dict):
            error = {}
        if 400 <= response.status_code < 500:
            retry_after = response.headers.get("Retry-After")
            return UpstreamError(
                response.status_code, message, type=error.get("type") or "invalid_request_error", param=error.get("param"),
                code=error.get("code"), retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return BadGatewayError(f"The upstream of model '{self.model_id}' failed ({response.status_code // 100}xx): {message}", code="upstream_error")


class Upstreams:
    """The one pooled client, and the Upstream of each remote model used so far (kept for its last status)."""

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 300.0, *, egress: str = "lan",
                 key_variables: KeyVariables = KeyVariables()):
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        transport = _Transport(egress, httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self.client = httpx.Client(timeout=timeout, transport=transport, trust_env=False)  # no proxy from the environment
        self.egress = egress
        self.key_variables = key_variables
        self._upstreams: dict[str, Upstream] = {}
        self._lock = threading.Lock()

    def check_settings(self, settings: dict) -> None:
        """A 400 for a remote model's settings (POST /v1/models) that name a key variable not allowed, or a base_url
        whose host is, or resolves to, an address egress refuses."""
        if settings.get("api_key_env"):
            self.key_variables.check(settings["api_key_env"])
        egress.check_url(str(settings.get("base_url") or ""), self.egress, "base_url")

    def cached(self, model_id: str) -> Upstream | None:
        return self._upstreams.get(model_id)

    def get(self, record: ModelRecord) -> Upstream:
        """The record's Upstream: the one used before, unless its settings changed since."""
        settings = record.settings
        fresh = Upstream(record.id, str(settings.get("base_url") or ""), str(settings.get("model") or ""), settings.get("api_key_env"),
                         self.client, self.key_variables)
        with self._lock:
            known = self._upstreams.get(record.id)
            if known is None or known.key != fresh.key:
                self._upstreams[record.id] = known = fresh
            return known

    def forget(self, model_id: str) -> None:
        self._upstreams.pop(model_id, None)

    def close(self) -> None:
        self.client.close()

