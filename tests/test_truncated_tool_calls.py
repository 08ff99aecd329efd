"""A tool call cut short by the token limit comes back as a (partial) call with the length reason, never as the
server's call markup, in chat and Responses, streamed and not (the official `openai` package, the real model)."""

import json

MODEL = "smollm2-135m-instruct"
FUNCTION = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK = "Weather in Paris?"
LIMIT = 20  # past the call's name (`<tool_call>` and `{"name": "get_weather", "arguments": {` are ~17 tokens), before its end


def assert_partial(name: str, arguments: str) -> None:
    assert name == "get_weather"
    assert arguments and "tool_call" not in arguments
    try:
        json.loads(arguments)
    except ValueError:
        return
    raise AssertionError(f"not cut short: {arguments}")


def test_chat(openai_client):
    fields = {"model": MODEL, "messages": [{"role": "user", "content": ASK}], "max_tokens": LIMIT, "tool_choice": "required",
              "tools": [{"type": "function", "function": FUNCTION}]}
    choice = openai_client.chat.completions.create(**fields).choices[0]
    assert choice.finish_reason == "length" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert_partial(call.function.name, call.function.arguments)
    chunks = list(openai_client.chat.completions.create(**fields, stream=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert not "".join(delta.content or "" for delta in deltas)
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    assert_partial(calls[0].function.name, "".join(call.function.arguments or "" for call in calls))
    assert chunks[-1].choices[0].finish_reason == "length"


def test_responses(openai_client):
    fields = {"model": MODEL, "input": ASK, "max_output_tokens": LIMIT, "tool_choice": "required", "tools": [{"type": "function", **FUNCTION}]}
    response = openai_client.responses.create(**fields)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    [call] = response.output
    assert call.type == "function_call" and call.status == "incomplete"
    assert_partial(call.name, call.arguments)
    events = list(openai_client.responses.create(**fields, stream=True))
    assert not [event for event in events if event.type == "response.output_text.delta"]
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert [item.type for item in final.output] == ["function_call"]
    assert_partial(final.output[0].name, final.output[0].arguments)
