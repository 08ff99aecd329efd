"""Anthropic's Messages API on the real server and bundled model, through the official `anthropic` package (and
LangChain's ChatAnthropic): every object and stream event is validated against the SDK's own types."""

from __future__ import annotations

import json
import threading

import anthropic
import httpx
import jsonschema
import pydantic
import pytest
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent

from jan_server.errors import UnavailableError
from jan_server.models.jobs import Job, Sampling
from jan_server.models.registry import BUNDLED_MODEL_ID
from jan_server.web import anthropic as anthropic_web
from jan_server.web import anthropic_stream
from tests.live_server import PATIENT, LiveServer

MODEL = BUNDLED_MODEL_ID
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"name": "get_weather", "description": "The current weather in a city.", "input_schema": WEATHER}
FORCED = {"type": "tool", "name": "get_weather"}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture()
def client(server) -> anthropic.Anthropic:
    with anthropic.Anthropic(base_url=server.base_url, api_key="unused", timeout=PATIENT, max_retries=0) as client:
        yield client


def created(client: anthropic.Anthropic, **body) -> tuple[Message, httpx.Response]:
    """The message of a create request, validated strictly from its raw JSON, and the HTTP response."""
    raw = client.messages.with_raw_response.create(model=MODEL, **body)
    return Message.model_validate(raw.http_response.json(), strict=True), raw.http_response


def events(server: LiveServer, body: dict) -> list[tuple[str, dict]]:
    """A streamed request's events as (event name, data)."""
    with httpx.stream("POST", f"{server.api_url}/messages", json={"model": MODEL, **body, "stream": True}, timeout=PATIENT) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream") and response.headers["request-id"].startswith("req_")
        lines = [line for line in response.iter_lines() if line]
    names, datas = lines[0::2], lines[1::2]
    return [(name.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for name, data in zip(names, datas)]


def validated(stream: list[tuple[str, dict]]) -> list:
    """The events as the SDK's types (ping, which the SDK skips, left out), each named by its own `type`."""
    assert all(name == data["type"] for name, data in stream)
    return [EVENTS.validate_python(data, strict=True) for name, data in stream if name != "ping"]


def test_create_answers_with_a_message_of_the_sdks_type(client):
    message, response = created(client, max_tokens=16, messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert response.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_") and message.model == MODEL and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 16
    assert message.usage.cache_creation_input_tokens == 0


def test_stream_helpers_give_the_text_and_the_final_message(client, server):
    body = {"max_tokens": 24, "system": "You are a poet.", "messages": [{"role": "user", "content": "Write a line about the sea."}]}
    with client.messages.stream(model=MODEL, **body) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")
    raw = events(server, body)
    assert [name for name, _ in raw[:2]] == ["message_start", "ping"] and [name for name, _ in raw[-2:]] == ["message_delta", "message_stop"]
    typed = validated(raw)
    assert {event.type for event in typed} == {"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
    prompt, again = typed[0].message.usage.input_tokens, typed[-2].usage  # message_start: the whole prompt, as input
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == prompt == again.input_tokens + again.cache_read_input_tokens
    assert again.cache_read_input_tokens > 0  # the same prompt again: its cells are reused from the slot


def test_a_forced_tool_use_has_input_valid_against_its_schema(client, server):
    message, _ = created(client, max_tokens=64, tools=[TOOL], tool_choice=FORCED, messages=ASK)
    assert message.stop_reason == "tool_use"
    (call,) = [block for block in message.content if block.type == "tool_use"]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    jsonschema.validate(call.input, WEATHER)
    with client.messages.stream(model=MODEL, max_tokens=64, tools=[TOOL], tool_choice=FORCED, messages=ASK) as stream:
        final = stream.get_final_message()
    (streamed,) = [block for block in final.content if block.type == "tool_use"]
    jsonschema.validate(streamed.input, WEATHER)
    typed = validated(events(server, {"max_tokens": 64, "tools": [TOOL], "tool_choice": FORCED, "messages": ASK}))
    assert any(event.type == "content_block_delta" and event.delta.type == "input_json_delta" for event in typed)
    assert typed[-2].delta.stop_reason == "tool_use"


def test_a_tool_result_is_read_and_answered(client):
    call = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "Sunny, 24 degrees."}]}
    turns = [*ASK, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]
    message, _ = created(client, max_tokens=24, tools=[TOOL], messages=turns)
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use") and message.content
    without = client.messages.count_tokens(model=MODEL, tools=[TOOL], messages=ASK)
    prompt = message.usage.input_tokens + message.usage.cache_read_input_tokens
    assert prompt > without.input_tokens + 10  # the call and its result are in the prompt


def test_count_tokens_equals_the_input_tokens_of_the_same_request(client):
    body = {"system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}], "tools": [TOOL], "messages": ASK}
    counted = client.messages.with_raw_response.count_tokens(model=MODEL, **body).http_response.json()
    count = MessageTokensCount.model_validate(counted, strict=True)
    message, _ = created(client, max_tokens=8, **body)
    assert count.input_tokens == message.usage.input_tokens + message.usage.cache_read_input_tokens > 0


def test_the_fields_claude_code_sends_are_accepted(client):
    """Claude Code's request shape: the beta client (`?beta=true`, `anthropic-beta`), a system prompt in cached
    blocks, adaptive thinking, effort, context management, metadata; `max_tokens` beyond the context is capped."""
    message = client.beta.messages.create(
        model=MODEL, max_tokens=32000, betas=["claude-code-20250219", "interleaved-thinking-2025-05-14"],
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi.", "cache_control": {"type": "ephemeral"}}]}],
        thinking={"type": "adaptive"}, output_config={"effort": "high"}, context_management={"edits": []},
        metadata={"user_id": "user_abc"}, temperature=1, stream=False,
    )
    assert message.content and message.stop_reason in ("end_turn", "model_context_window_exceeded")


def test_claude_codes_turns_and_tool_schemas_are_taken(client):
    """A system turn among the messages, tools marked `defer_loading`, and input schemas the grammar converter could
    not take as they are: a property that only describes itself (any value) and a `maxLength` of 524288."""
    workflow = {"name": "Workflow", "description": "Run a workflow.", "defer_loading": True, "input_schema": {
        "type": "object", "required": ["script"],
        "properties": {"script": {"type": "string", "maxLength": 524288}, "args": {"description": "Any value for the script."}}}}
    turns = [{"role": "user", "content": "Run the hello workflow."}, {"role": "system", "content": [{"type": "text", "text": "# Environment"}]}]
    message, _ = created(client, max_tokens=48, tools=[workflow, TOOL], tool_choice={"type": "tool", "name": "Workflow"}, messages=turns)
    calls = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason in ("tool_use", "max_tokens") and all(call.name == "Workflow" for call in calls)
    if message.stop_reason == "tool_use":  # a call cut by max_tokens comes back with the input written so far
        assert calls and all(isinstance(call.input["script"], str) for call in calls)


def test_structured_output_follows_its_json_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
              "required": ["city", "sunny"], "additionalProperties": False}
    message, _ = created(client, max_tokens=64, temperature=0, messages=ASK, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert message.stop_reason == "end_turn" and [block.type for block in message.content] == ["text"]
    jsonschema.validate(json.loads(message.content[0].text), schema)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=8, messages=ASK, tools=[TOOL], output_config={"format": {"type": "json_schema", "schema": schema}})
    assert raised.value.body["error"]["message"].startswith("output_config.format")


@pytest.mark.parametrize("arguments, written", [
    ('{"script": "print(1', {"script": "print(1"}),
    ('{"a": [1, {"b": "q\\"', {"a": [1, {"b": 'q"'}]}),
    ('{"a": "x\\', {"a": "x"}),
    ('{"a": 1, "b', {}),
    ("", {}),
])
def test_a_call_cut_by_max_tokens_has_the_input_written_so_far(arguments, written):
    """A non-streamed message's tool_use `input` is an object even when the limit cut the call (a 500 before)."""
    assert anthropic_web.tool_input(arguments) == written


def test_stop_reasons(client):
    message, _ = created(client, max_tokens=1, messages=[{"role": "user", "content": "Count to ten."}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 1
    stops = [" ", "\n", ","]
    message, _ = created(client, max_tokens=64, temperature=0, stop_sequences=stops, messages=[{"role": "user", "content": "Describe a cat."}])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence in stops


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://127.0.0.1/x.png"}}]}]}, "messages.0.content.0.type"),
    ({"messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking.type"),
    ({"messages": ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({"messages": ASK, "mcp_servers": [{"type": "url", "url": "http://127.0.0.1:9/mcp", "name": "x"}]}, "mcp_servers"),
    ({"messages": ASK, "container": "container_abc"}, "container"),
    ({"messages": ASK, "tools": [TOOL], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice"),
])
def test_what_the_server_cannot_do_is_a_bad_request_naming_the_field(client, body, field):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=8, messages=body["messages"], extra_body={k: v for k, v in body.items() if k != "messages"})
    error = raised.value.body
    assert raised.value.status_code == 400 and error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(field), error
    assert raised.value.request_id and raised.value.request_id.startswith("req_")


def test_a_prompt_longer_than_the_context_is_an_invalid_request_and_still_counted(client):
    long = [{"role": "user", "content": "word " * 20000}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=8, messages=long)
    assert raised.value.body["error"]["message"].startswith("prompt is too long")
    assert client.messages.count_tokens(model=MODEL, messages=long).input_tokens > 20000


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=ASK)
    assert raised.value.body["error"]["type"] == "not_found_error" and "claude-sonnet-4-5" in raised.value.message


def test_an_error_after_the_stream_began_is_an_error_event():
    """A job the scheduler fails after its first text (here its events put by hand: the model stopping under it)."""
    job = Job(prompt_tokens=[1, 2, 3], sampling=Sampling.from_parameters({"max_tokens": 8}))
    job.events.put(("delta", "Once"))
    job.events.put(("error", UnavailableError(f"Model '{MODEL}' is stopping.", code="model_stopping")))
    raw = sse_events(anthropic_stream.stream(job, {"model": MODEL, "max_tokens": 8}, None))
    assert [name for name, _ in raw] == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert raw[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": f"Model '{MODEL}' is stopping."}}


def sse_events(chunks) -> list[tuple[str, dict]]:
    """(name, data) of each event of a stream's writes (a write may hold several events)."""
    events = b"".join(chunks).split(b"\n\n")[:-1]
    return [(event.split(b"\n")[0].decode().removeprefix("event: "), json.loads(event.split(b"\n")[1].removeprefix(b"data: "))) for event in events]


def test_a_stream_waiting_for_its_first_token_pings(monkeypatch):
    """While a long prompt is read nothing else would come for minutes, and Claude Code resends a silent request."""
    monkeypatch.setattr(anthropic_stream, "PING_SECONDS", 0.05)
    job = Job(prompt_tokens=[1, 2, 3], sampling=Sampling.from_parameters({"max_tokens": 8}))
    threading.Timer(0.5, lambda: (job.events.put(("delta", "Hi")), job.events.put(("done", "stop")))).start()
    names = [name for name, _ in sse_events(anthropic_stream.stream(job, {"model": MODEL, "max_tokens": 8}, None))]
    assert names[:2] == ["message_start", "ping"] and names.index("content_block_start") > 3
    assert set(names[1:names.index("content_block_start")]) == {"ping"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_client_that_leaves_stops_the_generation(server):
    """A forced call whose input needs 400+ tokens (200 numbers), left after the first events."""
    numbers = {"name": "numbers", "input_schema": {"type": "object", "required": ["numbers"], "properties": {
        "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 200}}}}
    body = {"model": MODEL, "max_tokens": 1000, "stream": True, "tools": [numbers], "tool_choice": {"type": "tool", "name": "numbers"},
            "messages": [{"role": "user", "content": "List numbers."}]}
    with httpx.Client(base_url=server.api_url, timeout=PATIENT) as api:
        api.post("/messages", json={"model": MODEL, "max_tokens": 1, "messages": ASK})  # the model is running
        before = api.get(f"/models/{MODEL}").json()["metadata"]
        with api.stream("POST", "/messages", json=body) as response:
            events = 0
            for line in response.iter_lines():
                events += line.startswith("data:")
                if events == 6:
                    break  # leave: closing the response drops the connection
        assert api.post("/messages", json={"model": MODEL, "max_tokens": 5, "messages": ASK}).status_code == 200
        after = api.get(f"/models/{MODEL}").json()["metadata"]
    assert after["cancelled_requests"] == before["cancelled_requests"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] - 5 < 200  # the grammar needs 400+: stopped early


def test_api_keys_come_as_x_api_key_or_bearer(tmp_path):
    with LiveServer(tmp_path / "data", args=("--api-key", "sekret")) as keyed:
        with anthropic.Anthropic(base_url=keyed.base_url, api_key="wrong", max_retries=0, timeout=PATIENT) as wrong:
            with pytest.raises(anthropic.AuthenticationError) as raised:
                wrong.messages.count_tokens(model=MODEL, messages=ASK)
            assert raised.value.body["error"]["type"] == "authentication_error"
        with anthropic.Anthropic(base_url=keyed.base_url, api_key="sekret", max_retries=0, timeout=PATIENT) as right:
            assert right.messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0  # sent as x-api-key
        with anthropic.Anthropic(base_url=keyed.base_url, auth_token="sekret", max_retries=0, timeout=PATIENT) as bearer:
            assert bearer.messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0


def test_langchain_chat_anthropic_invokes_streams_and_calls_a_forced_tool(server):
    from langchain_anthropic import ChatAnthropic

    chat = ChatAnthropic(model=MODEL, base_url=server.base_url, api_key="unused", max_tokens=64, max_retries=0, timeout=PATIENT.read)
    assert chat.invoke("What is the capital of France?").content
    assert "".join(chunk.text for chunk in chat.stream("Write a line about the sea."))
    tooled = chat.bind_tools([TOOL], tool_choice="get_weather")
    (call,) = tooled.invoke("What is the weather in Paris?").tool_calls
    assert call["name"] == "get_weather"
    jsonschema.validate(call["args"], WEATHER)
