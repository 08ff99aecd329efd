"""The guards of docs/SECURITY.md against a real server: binding, API keys, CORS, the Host check, body size."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from jan_server.settings import Settings
from tests import postgres
from tests.live_server import LiveServer, free_port
from tests.test_app import assert_openai_error
from tests.test_spec import ADDED_OPERATIONS, SEED_OPERATIONS

KEYS = ("first-key", "second-key")
BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> LiveServer:
    """Two keys given as flags (they replace JAN_API_KEY's), and a small body limit."""
    data_dir = tmp_path_factory.mktemp("keyed") / "data"
    args = ("--api-key", KEYS[0], "--api-key", KEYS[1], "--max-body-bytes", str(BODY_LIMIT))
    live = LiveServer(data_dir, args=args, env={"JAN_API_KEY": "replaced-by-the-flags"}).start()
    yield live
    live.stop()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- binding -------------------------------------------------------------------------------------


def run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path / "data"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_open_server_refuses_a_non_loopback_address(host, tmp_path):
    result = run_cli("--host", host, "--port", str(free_port()), tmp_path=tmp_path)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "--allow-remote" in message[0] and "--api-key" in message[0], result.stderr


@pytest.mark.parametrize("options", [("--allow-remote",), ("--api-key", "k")], ids=["allow-remote", "api-key"])
def test_all_interfaces_with_a_key_or_allow_remote(options, tmp_path):
    live = LiveServer(tmp_path / "data", args=("--host", "0.0.0.0", *options)).start()
    try:
        # Bound to every interface, the server answers whatever name the client used.
        assert httpx.get(f"{live.base_url}/health", headers={"Host": "my-box.lan"}).status_code == 200
        status = httpx.get(f"{live.api_url}/threads").status_code
        assert status == (401 if "--api-key" in options else 200)
    finally:
        live.stop()


# --- API keys ------------------------------------------------------------------------------------


def test_env_keys_are_comma_separated():
    assert Settings.from_env({"JAN_API_KEY": " a, b ,,"}).api_keys == ("a", "b")
    assert Settings.from_env({"JAN_API_KEY": " , "}).api_keys == ()


@pytest.mark.parametrize("key", KEYS)
def test_each_key_opens_the_api(keyed, key):
    assert httpx.get(f"{keyed.api_url}/threads", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(KEYS[0][:-1]), bearer(KEYS[0] + "x"), {"Authorization": f"Basic {KEYS[0]}"},
     {"Authorization": KEYS[0]}, bearer("replaced-by-the-flags")],
    ids=["none", "wrong", "prefix", "longer", "basic", "no-scheme", "overridden-env-key"],
)
def test_missing_or_wrong_key_is_a_401(keyed, headers):
    response = httpx.get(f"{keyed.api_url}/threads", headers=headers)
    error = assert_openai_error(response, 401)
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"


def test_key_guards_every_v1_path_and_method(keyed):
    for method, path in [("POST", "/threads"), ("DELETE", "/threads/thread_x"), ("GET", "/no-such-route"), ("GET", "")]:
        response = httpx.request(method, f"{keyed.api_url}{path}", json={})
        assert_openai_error(response, 401)


def test_health_console_and_spec_stay_open(keyed):
    for path in ["/health", "/docs", "/v1/openapi.json", "/v1/openapi.yaml"]:
        assert httpx.get(f"{keyed.base_url}{path}").status_code == 200, path


def test_scheme_is_case_insensitive(keyed):
    assert httpx.get(f"{keyed.api_url}/threads", headers={"Authorization": f"bearer {KEYS[1]}"}).status_code == 200


def test_no_key_configured_means_open(server):
    assert httpx.get(f"{server.api_url}/threads").status_code == 200


# --- CORS ----------------------------------------------------------------------------------------


def preflight(live: LiveServer, origin: str) -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type"}
    return httpx.options(f"{live.api_url}/threads", headers=headers)


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:1420", "https://localhost", "http://[::1]:8080"])
def test_local_origins_pass_preflight_with_authorization(keyed, origin):
    response = preflight(keyed, origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "POST" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example", "http://127.0.0.1.nip.io:1337", "null"])
def test_other_origins_are_refused(keyed, origin):
    assert "access-control-allow-origin" not in preflight(keyed, origin).headers
    simple = httpx.get(f"{keyed.api_url}/threads", headers={"Origin": origin, **bearer(KEYS[0])})
    assert "access-control-allow-origin" not in simple.headers


def test_errors_carry_cors_headers_so_pages_can_read_them(keyed):
    response = httpx.get(f"{keyed.api_url}/threads", headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_configured_origins_replace_the_default(tmp_path):
    live = LiveServer(tmp_path / "data", env={"JAN_CORS_ORIGINS": "https://app.example, https://other.example"}).start()
    try:
        assert preflight(live, "https://app.example").headers["access-control-allow-origin"] == "https://app.example"
        assert preflight(live, "https://other.example").status_code == 200
        assert "access-control-allow-origin" not in preflight(live, "http://localhost:3000").headers
    finally:
        live.stop()


# --- Host header (DNS rebinding) -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost.", "[::1]"])
def test_loopback_names_are_accepted(server, host):
    for value in (f"{host}:{server.port}", host, f"{host}:9999"):
        assert httpx.get(f"{server.base_url}/health", headers={"Host": value}).status_code == 200, value


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "192.168.1.10", "[::2]"])
def test_rebinding_hosts_are_refused(server, host):
    for path in ["/health", "/v1/threads", "/docs"]:
        response = httpx.get(f"{server.base_url}{path}", headers={"Host": f"{host}:{server.port}"})
        assert assert_openai_error(response, 421)["code"] == "invalid_host"


def test_a_request_without_host_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/threads HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 421"), reply[:200]


# --- body size -----------------------------------------------------------------------------------


def test_declared_oversize_body_is_a_413(keyed):
    body = b'{"metadata": {"k": "' + b"x" * BODY_LIMIT + b'"}}'
    response = httpx.post(f"{keyed.api_url}/threads", content=body, headers={**bearer(KEYS[0]), "content-type": "application/json"})
    assert assert_openai_error(response, 413)["code"] == "request_too_large"


def test_streamed_oversize_body_is_a_413(keyed):
    def chunks():
        yield b'{"metadata": {"k": "'
        for _ in range(BODY_LIMIT // 512 + 1):
            yield b"x" * 512
        yield b'"}}'

    response = httpx.post(f"{keyed.api_url}/threads", content=chunks(), headers={**bearer(KEYS[0]), "content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert assert_openai_error(response, 413)["code"] == "request_too_large"


def test_body_under_the_limit_reaches_the_api(keyed):
    def chunks():
        yield b'{"metadata": '
        yield b'{"k": "small"}}'

    response = httpx.post(f"{keyed.api_url}/threads", content=chunks(), headers={**bearer(KEYS[0]), "content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"k": "small"}


# --- the spec, for the console's "Authorize" -----------------------------------------------------


def test_spec_declares_the_optional_bearer_scheme_and_401s(keyed):
    spec = httpx.get(f"{keyed.base_url}/v1/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {**spec["components"]["securitySchemes"]["bearerAuth"],
                                                                   "type": "http", "scheme": "bearer"}
    assert {"bearerAuth": []} in spec["security"] and {} in spec["security"]
    operations = [op for item in spec["paths"].values() for op in item.values() if isinstance(op, dict) and "operationId" in op]
    assert len(operations) == len(SEED_OPERATIONS) + len(ADDED_OPERATIONS)
    assert [op["operationId"] for op in operations if "401" not in op["responses"]] == []


def test_migrate_prints_the_database_url_without_its_password(postgres_url, tmp_path):
    """The test server trusts every local connection, so a URL with any password connects."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres.create_database(postgres_url)).set(password="pw-not-for-logs").render_as_string(hide_password=False)
    command = [sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path), "--database-url", url, "migrate"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "is up to date" in run.stdout and ":***@" in run.stdout
    assert "pw-not-for-logs" not in run.stdout + run.stderr
