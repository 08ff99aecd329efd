"""The Responses API's WebSocket mode (Open Responses 2026-04-24) through a plain WebSocket client (`websockets`)
against the real server and model: responses in sequence on one socket, continuation of `store: false` responses
held by the socket, errors as events, and the API key checked on the upgrade."""

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.live_server import LiveServer

MODEL = "smollm2-135m-instruct"
ENDED = {"response.completed", "response.incomplete"}  # (stopped by the model, or at max_output_tokens)
FINAL = ENDED | {"response.failed", "error"}


def socket_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/responses"


def turn(ws, **body) -> tuple[list[dict], dict]:
    """Send one response.create; its events, and the last one (the final response's event, or the error)."""
    ws.send(json.dumps({"type": "response.create", "model": MODEL, "max_output_tokens": 16, **body}))
    events = []
    while not events or events[-1]["type"] not in FINAL:
        events.append(json.loads(ws.recv(timeout=600)))
    return events, events[-1]


def test_responses_in_sequence_and_a_store_false_continuation(server, openai_client):
    with connect(socket_url(server)) as ws:
        events, first = turn(ws, store=False, input="The code word is cobalt.")
        assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        assert first["type"] in ENDED and first["response"]["store"] is False
        _, second = turn(ws, store=False, previous_response_id=first["response"]["id"], input="What is the code word?")
    # the context of the first (held by the socket, stored nowhere) came along
    alone = openai_client.responses.create(model=MODEL, store=False, input="What is the code word?", max_output_tokens=16)
    assert second["response"]["previous_response_id"] == first["response"]["id"]
    assert second["response"]["usage"]["input_tokens"] > alone.usage.input_tokens + first["response"]["usage"]["output_tokens"]


def test_errors_are_events_and_a_failed_continuation_drops_its_previous_response(server):
    with connect(socket_url(server)) as ws:
        _, missing = turn(ws, store=False, previous_response_id="resp_nowhere", input="Go on.")
        assert missing["status"] == 404 and missing["error"]["code"] == "previous_response_not_found"
        _, streamed = turn(ws, stream=True, input="Hi.")
        assert streamed["status"] == 400 and streamed["error"]["param"] == "stream"
        _, first = turn(ws, store=False, input="Hi.")
        held = first["response"]["id"]
        unanswered = [{"type": "function_call_output", "call_id": "call_none", "output": "42"}]
        _, failed = turn(ws, store=False, previous_response_id=held, input=unanswered)
        assert failed["status"] == 400 and failed["error"]["code"] == "call_not_found"
        _, gone = turn(ws, store=False, previous_response_id=held, input="Go on.")
        assert gone["error"]["code"] == "previous_response_not_found"
        _, after = turn(ws, input="Still here?")
        assert after["type"] in ENDED


def test_a_message_too_deep_to_read_is_an_error_event(server):
    """JSON nested deeper than Python's parser goes (a RecursionError, not a ValueError) is answered like any other
    unreadable message: the turn sent next gets its own answer, not the one the first never had."""
    with connect(socket_url(server)) as ws:
        ws.send("[" * 100_000)
        ws.send(json.dumps({"type": "response.create", "model": MODEL, "max_output_tokens": 4, "input": "Hi."}))
        refused = json.loads(ws.recv(timeout=600))
        assert refused["type"] == "error" and refused["status"] == 400 and refused["error"]["code"] == "invalid_json"
        assert json.loads(ws.recv(timeout=600))["type"] == "response.created"


def test_a_stored_response_continues_on_another_socket(server):
    with connect(socket_url(server)) as ws:
        _, first = turn(ws, input="The code word is slate.")
    with connect(socket_url(server)) as ws:
        _, second = turn(ws, previous_response_id=first["response"]["id"], input="What is the code word?")
    assert second["type"] in ENDED
    assert second["response"]["usage"]["input_tokens"] > first["response"]["usage"]["total_tokens"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("socket-keyed") / "data", args=("--api-key", "socket-key")).start()
    yield live
    live.stop()


def test_the_upgrade_needs_the_api_key(keyed):
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url(keyed))
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
    with connect(socket_url(keyed), additional_headers={"Authorization": "Bearer socket-key"}) as ws:
        _, answer = turn(ws, input="Hi.")
    assert answer["type"] in ENDED
