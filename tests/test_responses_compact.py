"""POST /v1/responses/compact and /v1/responses/input_tokens through the official `openai` package against the
real server and model."""

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"
CHAT = [
    {"role": "user", "content": "We agreed to launch on Tuesday and notify support first."},
    {"role": "assistant", "content": "Understood. The launch is Tuesday, with support notified beforehand."},
]


def test_compact_keeps_the_user_messages_and_a_short_rest_as_its_transcript(openai_client):
    compacted = openai_client.responses.compact(model=MODEL, input=CHAT)
    assert compacted.object == "response.compaction"
    user, summary = compacted.output
    assert user.type == "message" and user.role == "user" and user.content[0].text == CHAT[0]["content"]
    # no summary could be reliably shorter than this rest: it is kept word for word, and nothing is generated
    assert summary.type == "compaction" and summary.encrypted_content == f"assistant: {CHAT[1]['content']}"
    assert compacted.usage.output_tokens == compacted.usage.input_tokens == 0
    # the compacted window starts a new response, and reaches the model (as a system message with the summary)
    follow = [*compacted.model_dump(warnings=False)["output"], {"role": "user", "content": "When is the launch?"}]
    plain = openai_client.responses.input_tokens.count(model=MODEL, input=follow[:1] + follow[2:])
    counted = openai_client.responses.input_tokens.count(model=MODEL, input=follow)
    assert counted.input_tokens > plain.input_tokens
    answer = openai_client.responses.create(model=MODEL, input=follow, max_output_tokens=8)
    assert answer.usage.input_tokens == counted.input_tokens


def test_compact_summarises_a_long_rest(openai_client):
    report = "The launch checklist: " + " ".join(f"step {n}: check the {n}th server's disk, memory and logs." for n in range(1, 40))
    compacted = openai_client.responses.compact(model=MODEL, input=[CHAT[0], {"role": "assistant", "content": report}])
    user, summary = compacted.output
    assert user.content[0].text == CHAT[0]["content"]
    assert summary.type == "compaction" and summary.encrypted_content and summary.encrypted_content not in report
    assert 0 < compacted.usage.output_tokens <= 256


def test_compact_continues_a_stored_chain(openai_client):
    first = openai_client.responses.create(model=MODEL, input="The code word is slate.", max_output_tokens=8)
    compacted = openai_client.responses.compact(model=MODEL, previous_response_id=first.id)
    assert [item.type for item in compacted.output] == ["message", "compaction"]


def test_input_tokens_is_the_count_a_response_reads(openai_client):
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    fields = {"model": MODEL, "instructions": "Answer briefly.", "input": "Weather in Paris?", "tools": tools}
    counted = openai_client.responses.input_tokens.count(**fields)
    assert counted.object == "response.input_tokens"
    response = openai_client.responses.create(**fields, tool_choice="none", max_output_tokens=4)
    assert counted.input_tokens == response.usage.input_tokens
    assert openai_client.responses.input_tokens.count(model=MODEL, input="Weather in Paris?").input_tokens < counted.input_tokens


@pytest.mark.parametrize("path", ["responses/compact", "responses/input_tokens"])
def test_model_is_required(api: httpx.Client, path):
    response = api.post(path, json={"input": "Hi."})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_an_unknown_previous_response_is_a_404(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.compact(model=MODEL, previous_response_id="resp_nowhere")
