"""Hostile input gets a 4xx in OpenAI's shape and touches no file outside the data dir (nor its models).

The server's data dir sits next to decoy files; each request is followed by a check that nothing in the
parent folder outside the data dir, and nothing under the data dir's models/, changed.
"""

from __future__ import annotations

import hashlib
import http.client
from json import dumps
from pathlib import Path

import httpx
import pytest

from tests.live_server import PATIENT, LiveServer
from tests.test_app import assert_openai_error

MODEL = "smollm2-135m-instruct"
#: Path segments as sent on the wire (percent-encoded where a client would have to).
BAD_IDS = {
    "dotdot": "..",
    "traversal": "..%2F..%2Fsecret.txt",
    "encoded-dots": "%2E%2E%2F%2E%2E%2Fsecret.txt",
    "backslashes": "..%5C..%5Csecret.txt",
    "absolute": "%2Ftmp%2Fsecret.txt",
    "nul": "thread_a%00b",
    "over-long": "x" * 2000,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server whose data dir has decoys beside it, a thread with a message, and an assistant."""
    parent = tmp_path_factory.mktemp("bad-input")
    (parent / "secret.txt").write_text("decoy")
    (parent / "outside").mkdir()
    (parent / "outside" / "model.json").write_text("{}")
    live = LiveServer(parent / "data").start()
    with httpx.Client(base_url=live.api_url, timeout=PATIENT) as client:
        thread = client.post("/threads", json={"messages": [{"role": "user", "content": "hi"}]}).json()["id"]
        message = client.get(f"/threads/{thread}/messages").json()["data"][0]["id"]
        assistant = client.post("/assistants", json={"model": MODEL, "name": "a"}).json()["id"]
    yield {"live": live, "parent": parent, "thread": thread, "message": message, "assistant": assistant}
    live.stop()


def snapshot(parent: Path) -> dict[str, str]:
    """Every file outside the data dir (the server's own log aside) and under data/models, with its hash."""
    data = parent / "data"
    files = [p for p in parent.rglob("*") if data not in p.parents and p != data and not p.name.endswith("-server.log")]
    files += list((data / "models").rglob("*"))
    return {str(p.relative_to(parent)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in files}


def send(site, method: str, raw_path: str, json=None, content: bytes | None = None, headers=None) -> httpx.Response:
    """Send `raw_path` byte for byte (http.client, unlike httpx, leaves `..` alone) and check the disk after."""
    live, parent = site["live"], site["parent"]
    before = snapshot(parent)
    if json is not None:
        content, headers = dumps(json).encode(), {"content-type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=PATIENT.read)
    try:
        connection.request(method, raw_path, body=content, headers=headers or {})
        reply = connection.getresponse()
        response = httpx.Response(reply.status, headers=reply.getheaders(), content=reply.read())
    finally:
        connection.close()
    assert snapshot(parent) == before, f"{method} {raw_path[:80]} changed files outside the data dir"
    assert httpx.get(f"{live.base_url}/health").status_code == 200
    return response


def id_operations(site) -> list[tuple[str, str, dict]]:
    thread, message, assistant = site["thread"], site["message"], site["assistant"]
    message_body = {"json": {"role": "user", "content": "x"}}
    return [
        ("GET", "/v1/threads/{}", {}),
        ("POST", "/v1/threads/{}", {"json": {"metadata": {"k": "v"}}}),
        ("DELETE", "/v1/threads/{}", {}),
        ("GET", "/v1/threads/{}/", {}),
        ("GET", "/v1/threads/{}/assistants", {}),
        ("POST", f"/v1/threads/{{}}/assistants/{assistant}", {"json": {}}),
        ("POST", f"/v1/threads/{thread}/assistants/{{}}", {"json": {}}),
        ("GET", "/v1/threads/{}/messages", {}),
        ("POST", "/v1/threads/{}/messages", message_body),
        ("GET", f"/v1/threads/{thread}/messages/{{}}", {}),
        ("GET", f"/v1/threads/{thread}/messages/{{}}/files", {}),
        ("GET", f"/v1/threads/{thread}/messages/{message}/files/{{}}", {}),
        ("GET", "/v1/assistants/{}", {}),
        ("POST", "/v1/assistants/{}", {"json": {"name": "b"}}),
        ("DELETE", "/v1/assistants/{}", {}),
        ("GET", "/v1/models/{}", {}),
        ("DELETE", "/v1/models/{}", {}),
        ("PUT", "/v1/models/{}/start", {}),
        ("PUT", "/v1/models/{}/stop", {}),
    ]


@pytest.mark.parametrize("bad_id", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_ids_are_refused_on_every_operation(site, bad_id):
    for method, template, kwargs in id_operations(site):
        response = send(site, method, template.format(bad_id), **kwargs)
        assert response.status_code in (400, 404), f"{method} {template}: {response.status_code} {response.text[:200]}"
        assert_openai_error(response, response.status_code)


@pytest.mark.parametrize("path", ["/v1/threads/../../secret.txt", "/v1/models/../../outside", "/v1/../secret.txt",
                                  "/docs/../../secret.txt", "/docs/..%2F..%2Fsecret.txt", "/docs/%2Fetc%2Fpasswd"])
def test_unnormalised_dot_segments_reach_nothing(site, path):
    for method in ("GET", "DELETE"):
        response = send(site, method, path)
        assert 300 <= response.status_code < 500, f"{method} {path}: {response.status_code}"  # a redirect is not a read
        assert "decoy" not in response.text and "root:" not in response.text


def bad_bodies(site) -> list[tuple[str, str, object, str | None]]:
    """(method, path, JSON body, the `param` the 400 must name)."""
    thread = site["thread"]
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return [
        ("POST", "/v1/threads", {"metadata": "x"}, "metadata"),
        ("POST", "/v1/threads", {"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ("POST", "/v1/threads", {"metadata": {"k": "v" * 513}}, "metadata"),
        ("POST", "/v1/threads", {"messages": "hi"}, "messages"),
        ("POST", f"/v1/threads/{thread}", {"title": 5}, "title"),
        ("POST", f"/v1/threads/{thread}/messages", {"role": 5, "content": "x"}, "role"),
        ("POST", f"/v1/threads/{thread}/messages", {"role": "system", "content": "x"}, "role"),
        ("POST", f"/v1/threads/{thread}/messages", {"role": "user", "content": 5}, "content"),
        ("POST", f"/v1/threads/{thread}/messages", {"role": "user"}, "content"),
        ("POST", "/v1/assistants", {"model": 5}, "model"),
        ("POST", "/v1/assistants", {"model": "a b"}, "model"),
        ("POST", "/v1/assistants", {"models": [{"model_id": "a..b"}]}, "models"),
        ("POST", f"/v1/threads/{thread}", {"assistants": [{"assistant_id": "asst_x", "model": "../x"}]}, "assistants"),
        ("POST", "/v1/assistants", {"model": MODEL, "tools": "all"}, "tools"),
        ("POST", "/v1/chat/completions", {**chat, "messages": "hi"}, "messages"),
        ("POST", "/v1/chat/completions", {**chat, "messages": [{"role": "user"}]}, "messages"),
        ("POST", "/v1/chat/completions", {**chat, "messages": [{"role": "system", "content": None}]}, "messages"),
        ("POST", "/v1/chat/completions", {**chat, "model": "a/b"}, "model"),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": 10**9}, "max_tokens"),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": 2**70}, "max_tokens"),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": -1}, "max_tokens"),
        ("POST", "/v1/chat/completions", {**chat, "max_tokens": "ten"}, "max_tokens"),
        ("POST", "/v1/chat/completions", {**chat, "temperature": "hot"}, "temperature"),
        ("POST", "/v1/models", {"id": "../../outside", "source_url": "http://127.0.0.1:9/x.gguf"}, "id"),
        ("POST", "/v1/models", {"source_url": "file:///etc/passwd"}, "source_url"),
        ("PUT", f"/v1/models/{MODEL}/start", {"ctx_len": -1}, "ctx_len"),
    ]


def test_wrong_types_and_out_of_range_values_name_the_param(site):
    for method, path, body, param in bad_bodies(site):
        response = send(site, method, path, json=body)
        error = assert_openai_error(response, 400)
        named = error["param"] or ""
        assert named == param or named.startswith(f"{param}."), f"{method} {path} {str(body)[:80]}: {error}"


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=101", "limit=abc", "order=sideways", "after=%00", "before=..%2F"])
def test_bad_list_parameters_name_the_param(site, query):
    param = query.split("=")[0]
    for path in ["/v1/threads", "/v1/assistants", f"/v1/threads/{site['thread']}/messages"]:
        error = assert_openai_error(send(site, "GET", f"{path}?{query}"), 400)
        assert error["param"] == param, f"{path}?{query}: {error}"


MALFORMED = [b"{bad", b"", b"null", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000]  # the last: too deep to parse
#: createThread's body is optional, so an empty or null one is no body, not a bad one.
MALFORMED_CASES = [(path, body) for path in ["/v1/threads", "/v1/assistants", "/v1/chat/completions", "/v1/models", "THREAD/messages"]
                   for body in MALFORMED if not (path == "/v1/threads" and body in (b"", b"null"))]


@pytest.mark.parametrize(("path", "body"), MALFORMED_CASES, ids=lambda value: repr(value)[:24])
def test_malformed_json_is_a_400(site, path, body):
    path = path.replace("THREAD", f"/v1/threads/{site['thread']}")
    response = send(site, "POST", path, content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


def test_download_file_name_cannot_escape_the_models_dir(site):
    """The id derived from a URL's file name lands in models/, whatever the URL's path holds."""
    parent = site["parent"]
    outside = {k: v for k, v in snapshot(parent).items() if not k.startswith("data")}
    with httpx.Client(base_url=site["live"].api_url, timeout=PATIENT) as client:
        response = client.post("/models", json={"source_url": "http://127.0.0.1:9/..%2F..%2Foutside%2Fescape.gguf"})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            model_id = response.json()["id"]
            assert (parent / "data" / "models" / model_id).is_dir() and "/" not in model_id and ".." not in model_id
            client.delete(f"/models/{model_id}")
    assert {k: v for k, v in snapshot(parent).items() if not k.startswith("data")} == outside
