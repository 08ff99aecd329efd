"""GET /metrics against the real server: Prometheus's text format as prometheus_client's parser reads it, counters
that move with chats and requests, model gauges, download bytes, and the API key."""

from __future__ import annotations

import os

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.http_fixture import FileServer, Route
from tests.live_server import PATIENT, LiveServer
from tests.test_downloads import wait_for

MODEL = "smollm2-135m-instruct"


def scrape(base_url: str, path: str = "/metrics", **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    response = httpx.get(f"{base_url}{path}", headers=headers, timeout=PATIENT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text) for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_token_counters_and_histograms_move_after_a_chat(server):
    before = scrape(server.base_url)
    client = OpenAI(base_url=server.api_url, api_key="not-needed", timeout=600)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12)
    after = scrape(server.base_url)

    usage = reply.usage
    assert value(after, "jan_prompt_tokens_total", model=MODEL) - value(before, "jan_prompt_tokens_total", model=MODEL) == usage.prompt_tokens
    generated = value(after, "jan_generated_tokens_total", model=MODEL) - value(before, "jan_generated_tokens_total", model=MODEL)
    assert generated == usage.completion_tokens > 0
    first = "jan_time_to_first_token_seconds_count"
    assert value(after, first, model=MODEL) - value(before, first, model=MODEL) == 1
    gaps = "jan_time_per_output_token_seconds_count"
    assert value(after, gaps, model=MODEL) - value(before, gaps, model=MODEL) == usage.completion_tokens - 1
    assert value(after, "jan_time_to_first_token_seconds_sum", model=MODEL) > value(before, "jan_time_to_first_token_seconds_sum", model=MODEL)

    chats = ("jan_requests_total", {"operation": "createChatCompletion", "status": "200"})
    assert value(after, chats[0], **chats[1]) - value(before, chats[0], **chats[1]) == 1
    timed = "jan_request_duration_seconds_count"
    assert value(after, timed, operation="createChatCompletion") - value(before, timed, operation="createChatCompletion") == 1
    assert value(after, "jan_model_state", model=MODEL, state="running") == 1
    assert value(after, "jan_model_slots", model=MODEL) >= 1
    assert ("jan_model_busy_slots", (("model", MODEL),)) in after and ("jan_model_queued_requests", (("model", MODEL),)) in after


def test_requests_are_counted_by_operation_and_status(server, api):
    before = scrape(server.base_url)
    assert api.get("/threads/thread_missing").status_code == 404
    assert api.get("/threads", params={"limit": 0}).status_code == 400  # refused by the spec's validation
    assert api.get("/no/such/path").status_code == 404
    assert api.get("/metrics").status_code == 200  # the spec's own address of the scrape
    after = scrape(server.base_url)
    # The first scrape is counted once it has answered: getMetrics moved by two.
    for operation, status, moved in (("getThread", "404", 1), ("listThreads", "400", 1), ("none", "404", 1), ("getMetrics", "200", 2)):
        labels = {"operation": operation, "status": status}
        assert value(after, "jan_requests_total", **labels) - value(before, "jan_requests_total", **labels) == moved, labels
    assert value(after, "jan_model_state", model=MODEL, state="downloaded") + value(after, "jan_model_state", model=MODEL, state="running") == 1


@pytest.fixture()
def keyed_server(tmp_path):
    with LiveServer(tmp_path / "data", args=("--api-key", "sesame")) as live:
        yield live


def test_the_api_key_covers_the_scrape_and_downloads_show_their_bytes(keyed_server, tmp_path):
    for path in ("/metrics", "/v1/metrics"):
        refused = httpx.get(f"{keyed_server.base_url}{path}", timeout=PATIENT)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key", path
    key = {"authorization": "Bearer sesame"}
    refusals = value(scrape(keyed_server.base_url, **key), "jan_requests_total", operation="none", status="401")
    assert refusals == 2  # the guards' answers count too

    weights = tmp_path / "tiny.Q4_0.gguf"
    weights.write_bytes(b"GGUF" + os.urandom(300_000))
    with FileServer() as files:
        url = files.add("/tiny.Q4_0.gguf", Route(body=weights))
        with httpx.Client(base_url=keyed_server.api_url, headers=key, timeout=PATIENT) as api:
            assert api.post("/models", json={"source_url": url, "id": "tiny"}).status_code == 200
            wait_for(lambda: api.get("/models/tiny").json()["state"] != "downloading", timeout=120, interval=0.1)
    samples = scrape(keyed_server.base_url, "/v1/metrics", **key)
    size = weights.stat().st_size
    assert value(samples, "jan_download_bytes", model="tiny") == value(samples, "jan_download_size_bytes", model="tiny") == size
    assert sum(value(samples, "jan_model_state", model="tiny", state=state) for state in ("downloaded", "error")) == 1
