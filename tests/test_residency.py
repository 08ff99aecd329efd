"""Several models, managed: which loaded model makes room under --max-loaded-models and which are unloaded for
being idle (Residency, with stand-in runners), then the same on a real server with the bundled model under two ids."""

from __future__ import annotations

import time

import httpx
import pytest

from jan_server.errors import UnavailableError
from jan_server.models.registry import BUNDLED_MODEL_ID
from jan_server.models.residency import Residency
from tests.live_server import PATIENT, LiveServer, bundled_copy
from tests.test_remote import ENDLESS

COPY = "smol-copy"


class FakeScheduler:
    def __init__(self):
        self.queued = self.active = 0

    def stats(self) -> dict:
        return {"queued_requests": self.queued, "busy_slots": self.active}


class FakeRunner:
    def __init__(self):
        self.scheduler = FakeScheduler()


def loaded(residency: Residency, *ids: str) -> dict[str, FakeRunner]:
    runners = {}
    for model_id in ids:
        assert residency.make_room(model_id) == []
        residency.loaded(model_id, runners.setdefault(model_id, FakeRunner()), leased=False)
    return runners


def test_the_least_recently_used_idle_model_makes_room():
    residency = Residency(max_loaded=2)
    runners = loaded(residency, "a", "b")
    residency.lease("a")
    residency.release("a")  # a used after b
    assert residency.make_room("c") == [("b", runners["b"])]
    assert residency.get("b") is None and residency.get("a") is runners["a"]


def test_a_busy_or_leased_model_is_never_chosen():
    residency = Residency(max_loaded=2)
    runners = loaded(residency, "a", "b")
    runners["a"].scheduler.active = 1  # generating
    assert residency.lease("b") is runners["b"]  # a request between getting the runner and submitting its job
    with pytest.raises(UnavailableError) as busy:
        residency.make_room("c")
    assert (busy.value.status, busy.value.code, busy.value.retry_after) == (503, "models_busy", 1)
    runners["b"].scheduler.queued = 1
    residency.release("b")  # submitted: its queue keeps it busy
    with pytest.raises(UnavailableError):
        residency.make_room("c")
    runners["a"].scheduler.active = 0
    assert residency.make_room("c") == [("a", runners["a"])]


def test_a_model_loading_counts_against_the_limit():
    residency = Residency(max_loaded=1)
    assert residency.make_room("a") == []  # loading
    with pytest.raises(UnavailableError):
        residency.make_room("b")  # nothing loaded to stop yet
    residency.loaded("a", None, leased=False)  # a's load failed
    assert residency.make_room("b") == []


def test_idle_models_are_taken_out_after_the_timeout_and_busy_ones_stay():
    residency = Residency(idle_timeout=60)
    runners = loaded(residency, "a", "b")
    assert residency.idle("a") is None
    runners["b"].scheduler.active = 1
    residency._used = {key: used - 61 for key, used in residency._used.items()}  # a minute later
    assert residency.idle("b") is None  # busy, so used now
    assert residency.idle("a") is runners["a"] and residency.get("a") is None
    assert residency.get("b") is runners["b"] and residency.idle("c") is None
    assert Residency().idle("b") is None  # no timeout: never


@pytest.fixture()
def data_dir(tmp_path):
    """A data dir with the bundled model and a copy of it (its weights symlinked)."""
    bundled_copy(tmp_path / "data", COPY)
    return tmp_path / "data"


def states(api: httpx.Client) -> dict[str, str]:
    return {model["id"]: model["state"] for model in api.get("/models").json()["data"]}


def chat(api: httpx.Client, model: str) -> httpx.Response:
    return api.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})


def test_one_loaded_model_at_most_the_idle_one_makes_room_and_a_busy_one_is_a_503(data_dir):
    with LiveServer(data_dir, args=("--n-threads", "1", "--max-loaded-models", "1")) as live, httpx.Client(base_url=live.api_url, timeout=PATIENT) as api:
        assert chat(api, BUNDLED_MODEL_ID).status_code == 200
        assert states(api) == {BUNDLED_MODEL_ID: "running", COPY: "downloaded"}
        assert chat(api, COPY).status_code == 200
        assert states(api) == {BUNDLED_MODEL_ID: "downloaded", COPY: "running"}  # the idle one was stopped
        with api.stream("POST", "/chat/completions", json={"model": COPY, "stream": True, **ENDLESS}) as generating:
            lines = generating.iter_lines()  # held: a dropped iterator closes the connection, and the job ends
            next(lines)
            busy = chat(api, BUNDLED_MODEL_ID)
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1", busy.text
            assert busy.json()["error"]["code"] == "models_busy"
        deadline = time.monotonic() + 300  # the stream's job is cancelled within a token; a limit for a hang
        while (answer := chat(api, BUNDLED_MODEL_ID)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.status_code == 200 and states(api) == {BUNDLED_MODEL_ID: "running", COPY: "downloaded"}


def test_an_idle_model_is_stopped_after_the_idle_timeout(data_dir):
    with LiveServer(data_dir, args=("--n-threads", "1", "--idle-timeout", "1")) as live, httpx.Client(base_url=live.api_url, timeout=PATIENT) as api:
        assert api.put(f"/models/{COPY}/start").json()["state"] == "running"
        deadline = time.monotonic() + 300  # unloaded about a second after; a limit for a hang
        while states(api)[COPY] != "downloaded" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert states(api)[COPY] == "downloaded"
        assert chat(api, COPY).status_code == 200  # and started again on the next request
