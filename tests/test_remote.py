"""Remote engines against real servers: a second jan-server on 127.0.0.1 (with an API key) as the upstream of a
front jan-server whose models have `"engine": "openai"`; a closed port for an unreachable upstream; a tiny local
HTTP server that never answers (or stops mid-stream) for timeouts."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message

from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.live_server import PATIENT, LiveServer, free_port
from tests.test_app import assert_openai_error

UPSTREAM_KEY = "upstream-secret"
#: A prompt and grammar that keep the bundled model generating until max_tokens: a JSON string that must be longer
#: than max_tokens tokens can make (greedy, so the same every run).
ENDLESS = {
    "messages": [{"role": "user", "content": "Write a long story."}],
    "temperature": 0,
    "max_tokens": 1000,
    "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": {"type": "string", "minLength": 8000}}},
}


def remote(model_id: str, base_url: str, model: str = BUNDLED_MODEL_ID, api_key_env: str | None = "UPSTREAM_KEY") -> dict:
    settings = {"base_url": base_url, "model": model, **({"api_key_env": api_key_env} if api_key_env else {})}
    return {"id": model_id, "engine": "openai", "settings": settings}


class Stalling(http.server.BaseHTTPRequestHandler):
    """An upstream that takes requests and never answers them (`/stall/...`), or answers a stream's first event
    and then nothing more (`/half/...`), until the test releases it."""

    release = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/half/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'data: {"object":"chat.completion.chunk","choices":[]}\n\n')
            self.wfile.flush()
        self.release.wait(300)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("upstream") / "data", args=("--n-threads", "1", "--api-key", UPSTREAM_KEY)) as live:
        yield live


class Recording(http.server.BaseHTTPRequestHandler):
    """An upstream that answers every request with an empty model list and records what it was sent."""

    requests: list[dict] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append({"path": self.path, **dict(self.headers.items())})
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


class NotOpenAI(http.server.BaseHTTPRequestHandler):
    """A service that is not an OpenAI API: a 403 HTML page, or a 500 one under /broken/."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>internal admin console</html>"
        self.send_response(500 if self.path.startswith("/broken/") else 403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def front(tmp_path_factory, upstream):
    """The server under test, with a remote model on the upstream (its key in a variable the operator allowed by
    name), one whose key variable (under the allowed prefix) is unset, one naming a model the upstream does not have,
    and one on a port where nothing listens. Its environment also holds secrets no model may name."""
    args = ("--n-threads", "1", "--remote-key-env", "UPSTREAM_KEY")
    env = {"UPSTREAM_KEY": UPSTREAM_KEY, "HF_TOKEN": "hf-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret"}
    with LiveServer(tmp_path_factory.mktemp("front") / "data", args=args, env=env) as live:
        with httpx.Client(base_url=live.api_url, timeout=PATIENT) as client:
            for body in (
                remote("up", upstream.api_url),
                remote("keyless", upstream.api_url, api_key_env="JAN_REMOTE_NOT_SET_ANYWHERE"),
                remote("absent", upstream.api_url, model="no-such-model"),
                remote("closed", f"http://127.0.0.1:{free_port()}/v1"),
            ):
                assert client.post("/models", json=body).status_code == 200
        yield live


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    """A server with one-second timeouts, in front of the stalling upstream."""
    stalling = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=stalling.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{stalling.server_address[1]}"
    args = ("--n-threads", "1", "--remote-connect-timeout", "1", "--remote-read-timeout", "1")
    try:
        with LiveServer(tmp_path_factory.mktemp("impatient") / "data", args=args) as live:
            with httpx.Client(base_url=live.api_url, timeout=PATIENT) as client:
                for name in ("stall", "half"):
                    assert client.post("/models", json=remote(name, f"{base}/{name}/v1", api_key_env=None)).status_code == 200
            yield live
    finally:
        Stalling.release.set()
        stalling.shutdown()


def client(server: LiveServer, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", timeout=600, max_retries=0, **kwargs)


def upstream_model(upstream: LiveServer) -> dict:
    return httpx.get(f"{upstream.api_url}/models/{BUNDLED_MODEL_ID}", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=PATIENT).json()


def test_a_remote_model_is_added_listed_and_deleted_without_its_key(front, upstream):
    with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
        added = api.post("/models", json={**remote("gone-soon", upstream.api_url), "name": "Soon gone"}).json()
        assert (added["state"], added["engine"], added["format"], added["name"]) == ("remote", "openai", "api", "Soon gone")
        assert added["settings"] == {"base_url": upstream.api_url, "model": BUNDLED_MODEL_ID, "api_key_env": "UPSTREAM_KEY"}
        assert added["metadata"]["upstream_answered"] is None  # not asked yet
        listed = {model["id"]: model for model in api.get("/models").json()["data"]}
        assert listed["gone-soon"]["state"] == "remote" and UPSTREAM_KEY not in json.dumps(listed)
        assert UPSTREAM_KEY not in (front.data_dir / "models" / "gone-soon" / "model.json").read_text()
        again = api.post("/models", json=remote("gone-soon", upstream.api_url))
        assert again.status_code == 409 and again.json()["error"]["code"] == "model_exists"
        download = api.post("/models", json={"id": "gone-soon", "source_url": "http://127.0.0.1:9/x.gguf"})
        assert download.status_code == 409 and download.json()["error"]["code"] == "model_exists"
        assert api.delete("/models/gone-soon").json() == {"id": "gone-soon", "object": "model", "deleted": True}
        assert api.get("/models/gone-soon").status_code == 404


@pytest.mark.parametrize("variable", ["JAN_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "JAN_REMOTE", "jan_remote_key"])
def test_api_key_env_may_name_only_the_variables_the_operator_allows(front, upstream, variable):
    """Whoever may add a model must not be able to make the server send its other secrets to a host of theirs."""
    with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
        refused = api.post("/models", json=remote("thief", upstream.api_url, api_key_env=variable))
        error = assert_openai_error(refused, 400)
        assert (error["param"], error["code"]) == ("api_key_env", "api_key_env_not_allowed")
        assert api.get("/models/thief").status_code == 404
        allowed = api.post("/models", json=remote("by-prefix", upstream.api_url, api_key_env="JAN_REMOTE_" + variable))
        assert allowed.status_code == 200, allowed.text
        api.delete("/models/by-prefix").raise_for_status()


def test_a_model_json_naming_a_variable_not_allowed_sends_nothing(front):
    """A model.json written by hand is held to the same rule, at each request: its key is never sent."""
    recording = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=recording.serve_forever, daemon=True).start()
    try:
        folder = front.data_dir / "models" / "by-hand-secret"
        folder.mkdir()
        settings = {"base_url": f"http://127.0.0.1:{recording.server_address[1]}/v1", "model": "m", "api_key_env": "HF_TOKEN"}
        (folder / "model.json").write_text(json.dumps({"engine": "openai", "settings": settings}))
        with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
            chat = api.post("/chat/completions", json={"model": "by-hand-secret", "messages": [{"role": "user", "content": "hi"}]})
            assert assert_openai_error(chat, 400)["param"] == "api_key_env"
            assert assert_openai_error(api.put("/models/by-hand-secret/start"), 400)["param"] == "api_key_env"
            api.delete("/models/by-hand-secret").raise_for_status()
        assert Recording.requests == []
    finally:
        recording.shutdown()


def test_the_allowed_key_variables_are_settings():
    from jan_server.cli import build_parser, settings_from_args
    from jan_server.settings import Settings

    assert (Settings().remote_key_prefix, Settings().remote_key_envs) == ("JAN_REMOTE_", ())
    from_env = Settings.from_env({"JAN_REMOTE_KEY_PREFIX": "", "JAN_REMOTE_KEY_ENVS": "A, B"})
    assert (from_env.remote_key_prefix, from_env.remote_key_envs) == ("", ("A", "B"))
    args = build_parser().parse_args(["--remote-key-prefix", "UP_", "--remote-key-env", "A", "--remote-key-env", "C"])
    assert (settings_from_args(args).remote_key_prefix, settings_from_args(args).remote_key_envs) == ("UP_", ("A", "C"))


def test_a_remote_model_whose_folder_is_removed_by_hand_is_gone(front, upstream):
    with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
        assert api.post("/models", json=remote("by-hand", upstream.api_url)).status_code == 200
        chat = {"model": "by-hand", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2}
        assert api.post("/chat/completions", json=chat).status_code == 200
        shutil.rmtree(front.data_dir / "models" / "by-hand")
        error = assert_openai_error(api.post("/chat/completions", json=chat), 404)
        assert error["param"] == "model"


def test_chat_is_forwarded_with_the_key_from_the_environment(front, upstream):
    before = upstream_model(upstream)["metadata"].get("completed_requests", 0)
    completion = client(front).chat.completions.create(
        model="up", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert completion.model == BUNDLED_MODEL_ID  # the upstream's answer as it sent it
    assert completion.usage.completion_tokens <= 8
    assert upstream_model(upstream)["metadata"]["completed_requests"] == before + 1
    model = httpx.get(f"{front.api_url}/models/up", timeout=PATIENT).json()
    assert model["metadata"]["upstream_answered"] is True and model["metadata"]["upstream_checked_at"] >= time.time() - 600


def test_a_stream_is_relayed_event_by_event(front):
    stream = client(front).chat.completions.create(
        model="up", messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens <= 12


def test_anthropic_messages_are_asked_of_the_upstream_as_chat(front, upstream):
    """The Messages API on a remote model: the upstream answers the chat completion that asks the same, whole or
    replayed as Anthropic's events; a forced tool comes back as a tool_use; count_tokens is a 400 (no tokenizer)."""
    before = upstream_model(upstream)["metadata"].get("completed_requests", 0)
    with anthropic.Anthropic(base_url=front.base_url, api_key="unused", timeout=PATIENT, max_retries=0) as messages:
        ask = [{"role": "user", "content": "Say hi."}]
        message = Message.model_validate(messages.messages.with_raw_response.create(model="up", max_tokens=8, messages=ask).http_response.json(), strict=True)
        assert message.model == "up" and message.content[0].text and message.stop_reason in ("end_turn", "max_tokens")
        assert 0 < message.usage.output_tokens <= 8 and message.usage.input_tokens > 0
        with messages.messages.stream(model="up", max_tokens=8, temperature=0, messages=ask) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text and final.content[0].text == text and final.usage.output_tokens <= 8
        weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
        called = messages.messages.create(model="up", max_tokens=48, tools=[weather], tool_choice={"type": "tool", "name": "get_weather"},
                                          messages=[{"role": "user", "content": "Weather in Rome?"}])
        calls = [block for block in called.content if block.type == "tool_use"]
        assert called.stop_reason == "tool_use" and calls[0].name == "get_weather" and calls[0].id.startswith("toolu_")
        assert isinstance(calls[0].input["city"], str)
        with pytest.raises(anthropic.BadRequestError) as refused:
            messages.messages.count_tokens(model="up", messages=ask)
        assert refused.value.body["error"]["type"] == "invalid_request_error"
        with pytest.raises(anthropic.BadRequestError):
            messages.messages.create(model="up", max_tokens=8, top_k=5, messages=ask)
    assert upstream_model(upstream)["metadata"]["completed_requests"] == before + 3


def test_completions_and_embeddings_are_forwarded_too(front, upstream):
    remote_client = client(front)
    upstream_client = openai.OpenAI(base_url=upstream.api_url, api_key=UPSTREAM_KEY, timeout=600, max_retries=0)
    asked = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    completion = remote_client.completions.create(model="up", **asked)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == upstream_client.completions.create(model=BUNDLED_MODEL_ID, **asked).choices[0].text
    streamed = list(remote_client.completions.create(model="up", stream=True, **asked))
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == completion.choices[0].text
    vectors = remote_client.embeddings.create(model="up", input=["A cat.", "A cat."])
    assert len(vectors.data) == 2 and vectors.data[0].embedding == pytest.approx(vectors.data[1].embedding, abs=1e-6)
    with pytest.raises(openai.NotFoundError):  # the upstream's 404 for a model it does not have, as it is
        remote_client.embeddings.create(model="absent", input="A cat.")


def test_the_clients_disconnect_closes_the_upstream_request(front, upstream):
    before = upstream_model(upstream)["metadata"].get("cancelled_requests", 0)
    with httpx.Client(timeout=PATIENT) as http:
        with http.stream("POST", f"{front.api_url}/chat/completions", json={"model": "up", "stream": True, **ENDLESS}) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # generating now; leave
    deadline = time.monotonic() + 300  # the upstream's scheduler notices within a token; a limit for a hang
    while upstream_model(upstream)["metadata"].get("cancelled_requests", 0) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert upstream_model(upstream)["metadata"]["cancelled_requests"] == before + 1


def test_the_upstreams_4xx_come_back_as_they_are(front):
    keyless = httpx.post(f"{front.api_url}/chat/completions", json={"model": "keyless", "messages": [{"role": "user", "content": "hi"}]}, timeout=PATIENT)
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "invalid_api_key"  # the upstream's key check
    with pytest.raises(openai.NotFoundError) as absent:
        client(front).chat.completions.create(model="absent", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert absent.value.body["code"] == "model_not_found" and "no-such-model" in absent.value.body["message"]


def test_an_error_that_is_not_openais_is_passed_on_as_its_status_only(front):
    """A base_url at some other service of the network must not make the server read that service's pages out."""
    service = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotOpenAI)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{service.server_address[1]}"
    try:
        with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
            for name, status in (("page", 403), ("broken", 502)):
                api.post("/models", json=remote(f"not-openai-{name}", f"{base}/{name}/v1", api_key_env=None)).raise_for_status()
                chat = api.post("/chat/completions", json={"model": f"not-openai-{name}", "messages": [{"role": "user", "content": "hi"}]})
                error = assert_openai_error(chat, status)
                assert "admin" not in error["message"] and "html" not in error["message"], error
                api.delete(f"/models/not-openai-{name}").raise_for_status()
    finally:
        service.shutdown()


def test_an_unreachable_upstream_is_a_502(front):
    with pytest.raises(openai.APIStatusError) as closed:
        client(front).chat.completions.create(model="closed", messages=[{"role": "user", "content": "hi"}])
    assert closed.value.status_code == 502
    assert closed.value.body == {"message": closed.value.body["message"], "type": "server_error", "param": None, "code": "upstream_unavailable"}
    started = httpx.put(f"{front.api_url}/models/closed/start", timeout=PATIENT)
    assert started.status_code == 502 and started.json()["error"]["code"] == "upstream_unavailable"
    assert httpx.get(f"{front.api_url}/models/closed", timeout=PATIENT).json()["metadata"]["upstream_answered"] is False


def test_starting_a_remote_model_asks_its_upstream(front):
    started = httpx.put(f"{front.api_url}/models/up/start", timeout=PATIENT).json()
    assert started["state"] == "remote" and started["metadata"]["upstream_answered"] is True
    stopped = httpx.put(f"{front.api_url}/models/up/stop", timeout=PATIENT).json()
    assert stopped["state"] == "remote"


def test_an_upstream_that_does_not_answer_in_time_is_a_504(impatient):
    body = {"model": "stall", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        response = httpx.post(f"{impatient.api_url}/chat/completions", json={**body, "stream": stream}, timeout=PATIENT)
        assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout", response.text


def test_an_upstream_that_stops_mid_stream_ends_it_with_an_error_event(impatient):
    body = {"model": "half", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(f"{impatient.api_url}/chat/completions", json=body, timeout=PATIENT)
    assert response.status_code == 200
    events = response.text.split("\n\n")
    assert events[0] == 'data: {"object":"chat.completion.chunk","choices":[]}'
    assert events[1].startswith("event: error\ndata: ") and json.loads(events[1].split("data: ", 1)[1])["error"]["code"] == "upstream_timeout"
    assert events[2:] == ["data: [DONE]", ""]


def test_threads_and_assistants_take_a_remote_model(front):
    with httpx.Client(base_url=front.api_url, timeout=PATIENT) as api:
        assistant = api.post("/assistants", json={"model": "up", "name": "Remote"}).json()
        assert api.get(f"/assistants/{assistant['id']}").json()["model"] == "up"
        thread = api.post("/threads", json={"assistants": [{"assistant_id": assistant["id"], "model": "up"}]})
        assert thread.status_code == 200, thread.text
