"""Custom (freeform) tools in chat completions on the real bundled model, through the official `openai` package and
raw HTTP: a forced call's input matches its regex or Lark grammar, streamed as OpenAI streams it, and the call goes
back in `messages`; bodies checked against OpenAI's published schemas."""

from __future__ import annotations

import re

import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error
from tests.test_chat_tools import TOOLS, sse_payloads

MODEL = BUNDLED_MODEL_ID
BOOKING = "[1-9] at [0-2][0-9]:[0-5][0-9]"
SHELL = 'start: command\ncommand: "ls" | "pwd" | "date"\n'
FORMATS = {
    "book_table": ({"type": "grammar", "grammar": {"syntax": "regex", "definition": BOOKING}}, BOOKING),
    "shell": ({"type": "grammar", "grammar": {"syntax": "lark", "definition": SHELL}}, "ls|pwd|date"),
}
CUSTOM_TOOLS = [{"type": "custom", "custom": {"name": name, "description": f"The {name} tool.", "format": form}} for name, (form, _) in FORMATS.items()]
ASK = [{"role": "user", "content": "Book a table for 4 people at 19:30."}]


def forced(name: str) -> dict:
    return {"model": MODEL, "messages": ASK, "tools": CUSTOM_TOOLS + TOOLS, "tool_choice": {"type": "custom", "custom": {"name": name}},
            "max_tokens": 64, "temperature": 0}


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_forced_custom_call_matches_its_grammar(openai_client, api, name):
    raw = api.post("/chat/completions", json=forced(name))
    assert raw.status_code == 200, raw.text
    assert_valid(raw.json(), "CreateChatCompletionResponse")
    choice = openai_client.chat.completions.create(**forced(name)).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "custom" and call.id.startswith("call_") and call.custom.name == name
    assert re.fullmatch(FORMATS[name][1], call.custom.input), call.custom.input


def test_a_streamed_custom_call_is_its_name_then_input_fragments(openai_client, api):
    expected = openai_client.chat.completions.create(**forced("book_table")).choices[0].message.tool_calls[0]
    chunks = sse_payloads(api, forced("book_table"))
    calls = [call for chunk in chunks for call in chunk["choices"][0]["delta"].get("tool_calls") or []]
    for chunk in chunks:
        if not chunk["choices"][0]["delta"].get("tool_calls"):  # OpenAI's published chunk has no custom call
            assert_valid(chunk, "CreateChatCompletionStreamResponse")
    first, *rest = calls
    assert first == {"index": 0, "id": first["id"], "type": "custom", "custom": {"name": "book_table", "input": ""}}
    assert rest and all(call.keys() == {"index", "custom"} and call["custom"].keys() == {"input"} for call in rest)
    assert "".join(call["custom"]["input"] for call in rest) == expected.custom.input
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_custom_call_goes_back_in_messages(openai_client):
    call = openai_client.chat.completions.create(**forced("book_table")).choices[0].message.tool_calls[0].model_dump()

    def answer(input: str):
        history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [{**call, "custom": {**call["custom"], "input": input}}]},
                   {"role": "tool", "tool_call_id": call["id"], "content": "Booked."}]
        return openai_client.chat.completions.create(model=MODEL, messages=history, tools=CUSTOM_TOOLS, tool_choice="none", max_tokens=24, temperature=0)

    given = answer(call["custom"]["input"])
    assert given.choices[0].message.content.strip()
    longer = answer(call["custom"]["input"] + ", by the window" * 10)
    assert longer.usage.prompt_tokens > given.usage.prompt_tokens + 20  # the call's input is in the prompt


@pytest.mark.parametrize("extra, param", [
    ({"tool_choice": {"type": "custom", "custom": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "book_table"}}}, "tool_choice"),  # a custom tool's name
    ({"tool_choice": {"type": "custom", "custom": {"name": "get_weather"}}}, "tool_choice"),  # a function's name
    ({"tools": [{"type": "custom", "custom": {"name": "t", "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "(?=a)a"}}}}]}, "tools"),
    ({"tools": [{"type": "custom", "custom": {"name": "t", "format": {"type": "grammar", "syntax": "regex", "definition": "a"}}}]}, "tools.0.custom.format.type"),
])
def test_refused(api, extra, param):
    body = {"model": MODEL, "messages": ASK, "tools": CUSTOM_TOOLS + TOOLS, "max_tokens": 2, **extra}
    error = assert_openai_error(api.post("/chat/completions", json=body), 400)
    assert error["param"] == param, error
