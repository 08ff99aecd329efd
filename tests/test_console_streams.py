"""The /docs console shows a stream as it arrives, in a real headless Chromium against a real server and the bundled
model: the answer's text while the server still generates, the assembled text, a forced tool call, Stop, a streamed
Responses call, and a download's progress over loopback. Nothing leaves the host.

With JAN_SCREENSHOTS=docs the screenshots go where the README shows them (docs/console-*.png)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.http_fixture import FileServer, Route
from tests.live_server import LiveServer, until
from tests.test_docs_browser import opened_console, path_input, try_it_out

MODEL = "smollm2-135m-instruct"
SHOTS = Path(os.environ.get("JAN_SCREENSHOTS", "/tmp"))
PATIENT_MS = 300_000  # waits, not limits: the machine is shared, and a first chat loads the model


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    with LiveServer(tmp_path_factory.mktemp("streams") / "data") as live:
        yield live


@pytest.fixture(scope="module")
def console(server):
    with opened_console(server) as (page, requested):
        yield page, requested
        host = urlsplit(server.base_url).hostname
        assert requested and all(urlsplit(url).hostname == host for url in requested if urlsplit(url).scheme not in ("data", "blob"))


def start(page, operation_id: str, body: dict):
    """Fill in the request body and press Execute (after Clear, so that the response Swagger UI shows is this one's)."""
    block = try_it_out(page, operation_id)
    if block.locator("button.btn-clear").count():
        block.locator("button.btn-clear").click()
        block.locator(".live-responses-table").wait_for(state="detached")
    block.locator("textarea.body-param__text").first.fill(json.dumps(body))
    block.locator("button.execute").click()
    return block


def panel(operation_id: str) -> str:
    return f"[id$='-{operation_id}'] .jan-stream"


def finished(block) -> str:
    """Wait for Swagger UI's own response (it comes once the stream has ended) and return its body, the raw stream."""
    block.locator(".live-responses-table .response .response-col_status").first.wait_for(timeout=PATIENT_MS)
    return block.locator(".live-responses-table .response .response-col_description pre").first.inner_text()


def events(raw: str) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    found = re.search(rf'^{name}\{{model="{MODEL}"\}} (\S+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


#: The state of the stream panel and its text at the first moment its text is not empty, read in one evaluation.
FIRST_TEXT = """(selector) => {
  const live = document.querySelector(selector);
  const text = live && live.querySelector('.jan-stream__text');
  if (!text || !text.textContent) return null;
  return {state: live.dataset.state, text: text.textContent,
          types: [...live.querySelectorAll('.jan-stream__type')].map(e => e.textContent)};
}"""

#: At temperature 0 the bundled model writes this story until max_tokens (1500 tokens: finish_reason "length").
LONG_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}],
             "max_tokens": 400, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


def test_a_streamed_chat_shows_its_answer_as_it_arrives(console, server):
    page, _ = console
    block = start(page, "createChatCompletion", LONG_CHAT)
    first = page.wait_for_function(FIRST_TEXT, arg=panel("createChatCompletion"), timeout=PATIENT_MS).json_value()
    assert first["state"] == "streaming" and "[DONE]" not in first["types"], first  # text shown before the stream ended
    assert "chat.completion.chunk" in first["types"]
    assert page.locator(panel("createChatCompletion") + " .jan-stream__stop").is_visible()
    block.scroll_into_view_if_needed()
    page.locator(panel("createChatCompletion")).screenshot(path=str(SHOTS / "console-stream.png"))
    raw = finished(block)
    chunks = events(raw)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    live = page.locator(panel("createChatCompletion"))
    assert live.get_attribute("data-state") == "done"
    assert live.locator(".jan-stream__text").text_content() == streamed  # the assembled text is the deltas, all of them
    assert streamed.startswith(first["text"])
    usage = chunks[-1]["usage"]
    timings = live.locator(".jan-stream__timings").inner_text()
    assert f'"completion_tokens":{usage["completion_tokens"]}' in timings
    assert "Time to first token" in timings and "Tokens/s" in timings and "Total" in timings
    finish = chunks[-2]["choices"][0]["finish_reason"]
    assert f"Finish reason {finish}" in live.locator(".jan-stream__choice").inner_text()
    assert live.locator(".jan-stream__type").all_inner_texts().count("chat.completion.chunk") == len(chunks)
    assert "curl -X" in block.locator(".responses-inner").first.inner_text()  # the curl command, as for any call


def test_a_forced_tool_call_shows_its_name_and_parsed_arguments(console):
    page, _ = console
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "max_tokens": 64, "stream": True,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    block = start(page, "createChatCompletion", body)
    chunks = events(finished(block))
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or []]
    arguments = json.loads("".join(call["function"].get("arguments") or "" for call in calls))
    live = page.locator(panel("createChatCompletion"))
    assert live.locator(".jan-stream__tool-name").inner_text() == "get_weather"
    shown = live.locator(".jan-stream__args").inner_text()
    assert json.loads(shown) == arguments and isinstance(arguments["city"], str)
    assert shown == json.dumps(arguments, indent=2)  # pretty-printed once complete
    assert calls[0]["id"] in live.locator(".jan-stream__tool").inner_text()
    assert "Finish reason tool_calls" in live.inner_text()
    block.scroll_into_view_if_needed()
    live.screenshot(path=str(SHOTS / "console-stream-tool-call.png"))


def test_a_streamed_completion_shows_its_text(console):
    page, _ = console
    block = start(page, "createCompletion", {"model": MODEL, "prompt": "The three primary colours are", "max_tokens": 24, "stream": True})
    chunks = events(finished(block))
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    live = page.locator(panel("createCompletion"))
    assert streamed and live.locator(".jan-stream__text").text_content() == streamed
    assert live.locator(".jan-stream__type").all_inner_texts().count("text_completion") == len(chunks)
    assert f"Finish reason {chunks[-1]['choices'][0]['finish_reason']}" in live.inner_text()


def test_stop_ends_the_generation_on_the_server(console, server):
    page, _ = console
    before = metric(server, "jan_generated_tokens_total")
    block = start(page, "createChatCompletion", {**LONG_CHAT, "max_tokens": 1500})
    first = page.wait_for_function(FIRST_TEXT, arg=panel("createChatCompletion"), timeout=PATIENT_MS).json_value()
    assert first["state"] == "streaming"
    assert metric(server, "jan_model_busy_slots") == 1  # generating now
    page.locator(panel("createChatCompletion") + " .jan-stream__stop").click()
    live = page.locator(panel("createChatCompletion"))
    live.and_(page.locator("[data-state='stopped']")).wait_for(timeout=PATIENT_MS)
    until(lambda: metric(server, "jan_model_busy_slots") == 0, "the slot is free again")
    generated = metric(server, "jan_generated_tokens_total") - before
    assert 0 < generated < 1500  # without Stop it would have gone on to 1500
    assert "[DONE]" not in live.locator(".jan-stream__type").all_inner_texts() and "Finish reason" not in live.inner_text()
    assert not live.locator(".jan-stream__stop").count()
    finished(block)  # Swagger UI shows what came before Stop


def test_a_streamed_response_shows_its_text_and_output_items(console):
    page, _ = console
    block = start(page, "createResponse", {"model": MODEL, "input": "Write two sentences about the sea.", "max_output_tokens": 32,
                                              "temperature": 0, "stream": True})
    typed = events(finished(block))
    completed = typed[-1]["response"]  # response.completed, or response.incomplete at max_output_tokens
    live = page.locator(panel("createResponse"))
    text = "".join(e["delta"] for e in typed if e["type"] == "response.output_text.delta")
    assert text and live.locator(".jan-stream__text").text_content() == text
    items = live.locator(".jan-stream__item").all_inner_texts()
    assert len(items) == len(completed["output"]) >= 1
    message = completed["output"][0]
    assert items[0].startswith(f"message {message['id']} · {message['status']}") and text in items[0]
    assert f"Status {completed['status']}" in live.inner_text()
    assert {"response.created", "response.output_text.delta", typed[-1]["type"]} <= set(live.locator(".jan-stream__type").all_inner_texts())
    block.scroll_into_view_if_needed()
    live.screenshot(path=str(SHOTS / "console-stream-response.png"))
    assert path_input(try_it_out(page, "getResponse"), "response_id").input_value() == completed["id"]  # remembered


PROGRESS = """(selector) => {
  const live = document.querySelector(selector);
  const bar = live && live.querySelector('.jan-stream__progress progress');
  return bar && bar.value > 0 && {value: bar.value, text: live.querySelector('.jan-stream__progress-text').textContent, state: live.dataset.state};
}"""


def test_a_download_shows_its_progress_moving(console, server):
    from jan_server.models.registry import bundled_weights

    page, _ = console
    with FileServer() as files:
        route = Route(body=bundled_weights(), rate=4 * 1024 * 1024)
        url = files.add("/console/copy.gguf", route)
        block = start(page, "downloadModel", {"source_url": url, "id": "console-copy", "stream": True})
        first = page.wait_for_function(PROGRESS, arg=panel("downloadModel"), timeout=PATIENT_MS).json_value()
        later = page.wait_for_function(PROGRESS.replace("bar.value > 0", f"bar.value > {first['value']}"), arg=panel("downloadModel"),
                                       timeout=PATIENT_MS).json_value()
        for seen in (first, later):
            assert seen["state"] == "streaming" and "downloading" in seen["text"] and " MB of " in seen["text"] and "MB/s" in seen["text"], seen
            assert 0 < seen["value"] < 100
        block.scroll_into_view_if_needed()
        page.locator(panel("downloadModel")).screenshot(path=str(SHOTS / "console-stream-download.png"))
        route.rate = None
        finished(block)
    live = page.locator(panel("downloadModel"))
    assert live.get_attribute("data-state") == "done"
    assert "100.0 %" in live.inner_text() and "downloaded" in live.inner_text()
    assert httpx.get(f"{server.api_url}/models/console-copy", timeout=30).json()["state"] == "downloaded"
    offered = try_it_out(page, "retrieveModel").locator("tr[data-param-name='model_id'] + tr.jan-ids button.jan-ids__id").all_inner_texts()
    assert offered[0] == "console-copy"  # remembered like any other response's id
    httpx.delete(f"{server.api_url}/models/console-copy", timeout=60).raise_for_status()
