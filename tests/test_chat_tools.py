"""Tool calls, logprobs and `chat.completions.parse` on the real bundled model, through the official `openai`
package and raw HTTP; bodies checked against OpenAI's published schemas."""

from __future__ import annotations

import json

import jsonschema
import pydantic
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error

MODEL = BUNDLED_MODEL_ID
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def assert_valid_call(call) -> dict:
    assert call.id.startswith("call_") and call.type == "function"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def sse_payloads(api, body: dict) -> list[dict]:
    with api.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_named_tool_call(openai_client, api):
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": NAMED, "max_tokens": 80, "temperature": 0}
    raw = api.post("/chat/completions", json=body)
    assert raw.status_code == 200, raw.text
    assert_valid(raw.json(), "CreateChatCompletionResponse")
    choice = openai_client.chat.completions.create(**body).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls  # a named choice is exactly one call
    assert call.function.name == "get_weather"
    assert_valid_call(call)


def test_required_tool_calls_are_valid(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Add 2 and 3."}], tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert 1 <= len(choice.message.tool_calls) <= 4
    for call in choice.message.tool_calls:
        assert_valid_call(call)
    assert len({call.id for call in choice.message.tool_calls}) == len(choice.message.tool_calls)


@pytest.mark.parametrize("tool_choice", [NAMED, "required"])
def test_streamed_tool_call_assembled_by_the_sdk(openai_client, api, tool_choice):
    request = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=80, temperature=0)
    expected = openai_client.chat.completions.create(**request).choices[0].message.tool_calls
    with openai_client.chat.completions.stream(**request) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events and "tool_calls.function.arguments.done" in events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    assert_valid_call(call)
    assert (call.function.name, call.function.arguments) == (expected[0].function.name, expected[0].function.arguments)

    chunks = sse_payloads(api, request)
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    pieces = [chunk["choices"][0]["delta"]["tool_calls"][0] for chunk in chunks if chunk["choices"][0]["delta"].get("tool_calls")]
    first, *fragments = pieces
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": call.function.name, "arguments": ""}
    assert len(fragments) > 2 and all(set(piece) == {"index", "function"} for piece in fragments)  # streamed, not in one piece
    assert "".join(piece["function"]["arguments"] for piece in fragments) == call.function.arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_result_fed_back_is_answered(openai_client):
    call = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=80, temperature=0).choices[0].message.tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "unit": "celsius", "sky": "sunny"})},
    ]
    answer = openai_client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=48, temperature=0).choices[0]
    assert answer.message.tool_calls is None and answer.finish_reason in ("stop", "length")
    assert answer.message.content.strip()


def test_auto_gives_text_or_a_valid_call(openai_client):
    for messages in (ASK, [{"role": "user", "content": "Tell me a joke."}]):
        choice = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto", max_tokens=120, temperature=0).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            for call in choice.message.tool_calls:
                assert_valid_call(call)
        else:
            assert choice.message.content.strip() and "<tool_call>" not in choice.message.content


def test_none_answers_in_text(openai_client):
    choice = openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=24, temperature=0).choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")
    assert choice.message.content.strip()


def test_parse_with_a_pydantic_model(openai_client):
    class City(pydantic.BaseModel):
        name: str
        country: str
        population: int

    for parse in (openai_client.chat.completions.parse, openai_client.beta.chat.completions.parse):
        completion = parse(
            model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], response_format=City, max_tokens=80, temperature=0,
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, City) and isinstance(parsed.population, int)


def test_logprobs_match_llama_cpp(openai_client, api):
    import llama_cpp

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 5}
    raw = api.post("/chat/completions", json=body)
    assert raw.status_code == 200, raw.text
    assert_valid(raw.json(), "CreateChatCompletionResponse")
    ours = raw.json()["choices"][0]["logprobs"]["content"]
    assert "".join(entry["token"] for entry in ours) == raw.json()["choices"][0]["message"]["content"]

    # SmolLM2's chat template (ChatML), written out by hand
    prompt = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    llama = llama_cpp.Llama(str(bundled_weights()), n_ctx=512, n_threads=1, logits_all=True, flash_attn=True, verbose=False)
    try:
        tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
        theirs = llama.create_completion(tokens, max_tokens=6, temperature=0, repeat_penalty=1.0, logprobs=5)["choices"][0]["logprobs"]
    finally:
        llama.close()
    assert [entry["token"] for entry in ours] == theirs["tokens"][: len(ours)]
    for entry, logprob, top in zip(ours, theirs["token_logprobs"], theirs["top_logprobs"]):
        assert entry["logprob"] == pytest.approx(logprob, abs=1e-3)
        assert entry["bytes"] == list(entry["token"].encode())
        assert [alternative["logprob"] for alternative in entry["top_logprobs"]] == pytest.approx(sorted(top.values(), reverse=True), abs=1e-3)
        assert {alternative["token"] for alternative in entry["top_logprobs"]} == set(top)


def test_streamed_logprobs_are_the_plain_ones(api):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    plain = api.post("/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    chunks = sse_payloads(api, body)
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    streamed = [entry for chunk in chunks for entry in chunk["choices"][0]["logprobs"]["content"]]
    assert [entry["token"] for entry in streamed] == [entry["token"] for entry in plain]
    assert [entry["logprob"] for entry in streamed] == pytest.approx([entry["logprob"] for entry in plain], abs=1e-6)
    assert all(len(entry["top_logprobs"]) == 2 for entry in streamed)
    without = api.post("/chat/completions", json={**body, "logprobs": False, "top_logprobs": None}).json()
    assert without["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("extra, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools.0"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, None),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"messages": [{"role": "tool", "content": "42"}]}, None),  # no tool_call_id
    ({"messages": [{"role": "tool", "tool_call_id": "call_1"}]}, None),  # no content
])
def test_refused(api, extra, param):
    error = assert_openai_error(api.post("/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2, **extra}), 400)
    if param:
        assert error["param"] == param, error


def test_labels_are_accepted(api):
    labels = {"user": "u1", "metadata": {"team": "a"}, "store": False, "service_tier": "auto", "prompt_cache_key": "k",
              "safety_identifier": "s", "modalities": ["text"], "parallel_tool_calls": True, "logprobs": False}
    reply = api.post("/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2, **labels})
    assert reply.status_code == 200, reply.text
