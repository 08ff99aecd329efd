"""The Responses API through the official `openai` package against the real server and model; bodies and stream
events validated against OpenAI's published schemas (tests/openai_reference.py)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.live_server import PATIENT
from tests.openai_reference import assert_valid

MODEL = "smollm2-135m-instruct"
#: A format whose answer is one short, fixed-shape JSON object: the grammar ends it, so it completes.
YES_NO = {"type": "json_schema", "name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}, "required": ["answer"]}}
#: A format the model cannot finish within a few tokens (at least 120 numbers).
ENDLESS = {"type": "json_schema", "name": "numbers", "schema": {
    "type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 120}}, "required": ["numbers"]}}
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}
#: How long a background response may take to reach a state on a loaded 2-core machine; a limit for a hang only.
SETTLE_S = 300


def published(body: dict) -> dict:
    """A response, or an event with one, as OpenAI's published schema has it: Open Responses requires `usage: null`
    until a response ends, which that schema (usage optional, never null) does not name; checked, and left out."""
    if body.get("object") != "response":
        return {**body, "response": published(body["response"])} if "response" in body else body
    if body.get("usage", 0) is not None:
        return body
    assert body["status"] in ("queued", "in_progress")
    return {key: value for key, value in body.items() if key != "usage"}


def create(openai_client: openai.OpenAI, **fields):
    """responses.create, returning the SDK object after validating the raw body against OpenAI's `Response`."""
    raw = openai_client.responses.with_raw_response.create(model=MODEL, **fields)
    assert_valid(published(raw.http_response.json()), "Response")
    return raw.parse()


def wait_for(openai_client: openai.OpenAI, response_id: str, statuses: set[str]):
    """The response once it has one of `statuses`; a streamed one is stored when it ends, so 404 until then."""
    deadline = time.monotonic() + SETTLE_S
    status = "not stored"
    while time.monotonic() < deadline:
        try:
            response = openai_client.responses.retrieve(response_id)
        except openai.NotFoundError:
            response = None
        if response is not None and response.status in statuses:
            return response
        status = response.status if response is not None else status
        time.sleep(0.2)
    raise AssertionError(f"{response_id} stayed {status}")


def test_string_input_with_instructions(openai_client):
    response = create(openai_client, input="What is the capital of France?", instructions="Answer in one short sentence.", max_output_tokens=24, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.instructions == "Answer in one short sentence."
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24 and usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_item_input_is_stored_as_input_items(openai_client):
    given = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
    ]
    response = create(openai_client, input=given, max_output_tokens=16)
    raw = openai_client.responses.input_items.with_raw_response.list(response.id, order="asc")
    assert_valid(raw.http_response.json(), "ResponseItemList")
    listed = raw.parse().data
    assert [(item.role, item.content[0].text) for item in listed] == [
        ("user", "My name is Ada."), ("assistant", "Nice to meet you, Ada!"), ("user", "What is my name?")]
    assert [item.content[0].type for item in listed] == ["input_text", "output_text", "input_text"]
    newest_first = openai_client.responses.input_items.list(response.id, limit=2)
    assert [item.id for item in newest_first.data] == [listed[2].id, listed[1].id] and newest_first.has_more


def test_a_chain_of_three_turns_carries_its_context(openai_client):
    first = create(openai_client, input="Remember the number 7.", instructions="Be brief.", max_output_tokens=16)
    second = create(openai_client, input="What number did I ask you to remember?", previous_response_id=first.id, max_output_tokens=16)
    third = create(openai_client, input="Add one to it.", previous_response_id=second.id, max_output_tokens=16)
    inputs = [response.usage.input_tokens for response in (first, second, third)]
    assert inputs[0] < inputs[1] < inputs[2], inputs
    assert third.previous_response_id == second.id and third.instructions is None  # instructions are not carried over
    assert openai_client.responses.input_items.list(third.id).data[0].content[0].text == "Add one to it."  # its own input only


def test_stream_sends_openais_events_in_order(server):
    body = {"model": MODEL, "input": "Is the sky blue? Answer in JSON.", "text": {"format": YES_NO}, "max_output_tokens": 64, "stream": True}
    events = []
    with httpx.stream("POST", f"{server.api_url}/responses", json=body, timeout=PATIENT) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    for event in events:
        assert_valid(published(event), "ResponseStreamEvent")
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    kinds = [event["type"] for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert json.loads(text)["answer"] in ("yes", "no")
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == text
    stored = httpx.get(f"{server.api_url}/responses/{final['id']}", timeout=PATIENT).json()
    assert stored["output"] == final["output"] and stored["usage"] == final["usage"]


def test_sdk_stream_and_its_final_response(openai_client):
    with openai_client.responses.stream(model=MODEL, input="Is water wet? Answer in JSON.", text={"format": YES_NO}, max_output_tokens=64) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(deltas)
    assert openai_client.responses.retrieve(final.id).output_text == final.output_text


def test_text_format_json_schema_gives_parseable_output(openai_client):
    person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}}, "required": ["name", "age"]}
    response = create(openai_client, input="Invent a person.", text={"format": {"type": "json_schema", "name": "person", "schema": person}}, max_output_tokens=64)
    assert response.status == "completed", response.incomplete_details
    parsed = json.loads(response.output_text)
    assert isinstance(parsed["name"], str) and isinstance(parsed["age"], int)
    assert response.text.format.type == "json_schema"


def test_max_output_tokens_makes_it_incomplete(openai_client):
    response = create(openai_client, input="List numbers.", text={"format": ENDLESS}, max_output_tokens=5)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5 and response.output[0].status == "incomplete"


def test_retrieve_and_delete(openai_client):
    response = create(openai_client, input="Hello!", max_output_tokens=8, metadata={"purpose": "test"})
    raw = openai_client.responses.with_raw_response.retrieve(response.id)
    assert_valid(raw.http_response.json(), "Response")
    assert raw.parse().output_text == response.output_text and raw.parse().metadata == {"purpose": "test"}
    openai_client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.create(model=MODEL, input="Go on.", previous_response_id=response.id)
    assert missing.value.body["code"] == "response_not_found" and missing.value.body["param"] == "previous_response_id"


def test_store_false_is_not_retrievable(openai_client):
    response = create(openai_client, input="Hello!", max_output_tokens=8, store=False)
    assert response.store is False and response.status in ("completed", "incomplete")
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(response.id)


def test_background_response_completes_and_is_stored(openai_client):
    response = create(openai_client, input="Say hello.", max_output_tokens=8, background=True)
    assert response.background and response.status == "queued" and not response.output
    done = wait_for(openai_client, response.id, {"completed", "incomplete"})
    assert done.output_text and done.usage.output_tokens > 0
    assert openai_client.responses.cancel(response.id).status == done.status  # no longer running: returned as it is


def test_background_response_is_cancelled(openai_client):
    response = create(openai_client, input="List numbers.", text={"format": ENDLESS}, max_output_tokens=2000, background=True)
    wait_for(openai_client, response.id, {"in_progress"})
    cancelled = openai_client.responses.cancel(response.id)
    assert cancelled.status == "cancelled" and cancelled.usage.output_tokens < 2000
    time.sleep(1)  # a generation that went on would change what is stored
    assert openai_client.responses.retrieve(response.id).usage.output_tokens == cancelled.usage.output_tokens


def test_a_client_that_leaves_a_stream_stops_it(server, openai_client):
    body = {"model": MODEL, "input": "List numbers.", "text": {"format": ENDLESS}, "max_output_tokens": 2000, "stream": True}
    with httpx.stream("POST", f"{server.api_url}/responses", json=body, timeout=PATIENT) as stream:
        lines = stream.iter_lines()
        response_id = next(json.loads(line[6:])["response"]["id"] for line in lines if line.startswith("data: "))
        next(line for line in lines if line.startswith("data: ") and "output_text.delta" in line)
    stopped = wait_for(openai_client, response_id, {"cancelled"})
    assert stopped.usage.output_tokens < 2000


def test_truncation(openai_client):
    long_ago = {"role": "user", "content": "word " * 9000}  # more than the bundled model's 8,192-token context
    given = [long_ago, {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Say hi."}]
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model=MODEL, input=given, max_output_tokens=8)
    assert refused.value.body["code"] == "context_length_exceeded" and refused.value.body["param"] == "input"
    truncated = create(openai_client, input=given, max_output_tokens=8, truncation="auto")
    assert truncated.truncation == "auto" and truncated.usage.input_tokens < 100


@pytest.mark.parametrize("fields, param", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice"),
    ({"input": [{"type": "function_call_output", "call_id": "call_nowhere", "output": "18 C"}]}, "input"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": []}, "input"),
])
def test_bad_input_is_a_400_naming_the_field(openai_client, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(**{"model": MODEL, "input": "Hi", **fields})
    assert refused.value.body["param"] == param


def test_conflicting_options_are_a_400(openai_client):
    for fields in ({"previous_response_id": "resp_x", "conversation": "conv_x"}, {"background": True, "stream": True}, {"background": True, "store": False}):
        with pytest.raises(openai.BadRequestError):
            openai_client.responses.create(model=MODEL, input="Hi", **fields)


def test_unknown_ids_are_404s(openai_client):
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.create(model=MODEL, input="Hi", conversation="conv_missing")
    assert missing.value.body["code"] == "conversation_not_found"
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.cancel("resp_missing")
    assert missing.value.body["code"] == "response_not_found"


def test_a_required_function_call_answered_with_its_output(openai_client):
    called = create(openai_client, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
                    temperature=0, max_output_tokens=64)  # one call, greedy: it fits the 64 tokens every run
    assert called.status == "completed"
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and all(call.name == "get_weather" and call.call_id.startswith("call_") for call in calls)
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert called.tools[0].name == "get_weather" and called.tool_choice == "required"
    answered = create(openai_client, previous_response_id=called.id, tools=[WEATHER], max_output_tokens=32, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temperature_c": 18})} for call in calls])
    assert answered.status in ("completed", "incomplete") and answered.usage.input_tokens > called.usage.input_tokens
    listed = openai_client.responses.input_items.with_raw_response.list(answered.id)
    assert_valid(listed.http_response.json(), "ResponseItemList")
    assert {item.call_id for item in listed.parse().data} == {call.call_id for call in calls}


def test_a_streamed_function_call(server, openai_client):
    body = {"model": MODEL, "input": "What is the weather in Rome?", "tools": [WEATHER], "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "name": "get_weather"}, "max_output_tokens": 64, "stream": True}
    events = []
    with httpx.stream("POST", f"{server.api_url}/responses", json=body, timeout=PATIENT) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    for event in events:
        assert_valid(published(event), "ResponseStreamEvent")
    kinds = [event["type"] for event in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas >= 1 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]
    arguments = "".join(event["delta"] for event in events if event["type"] == "response.function_call_arguments.delta")
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and call["arguments"] == arguments and json.loads(arguments)["city"]
    with openai_client.responses.stream(model=MODEL, input="What is the weather in Oslo?", tools=[WEATHER], tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=128) as sdk_stream:  # one call: it completes
        final = sdk_stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments)["city"]
