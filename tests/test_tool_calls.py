"""jan_server.models.tools without a model: plans, prompts, the call parser, and a Jinja template that reads `tools`."""

from __future__ import annotations

import json

import pytest

from jan_server.errors import InvalidRequestError
from jan_server.models import tools
from jan_server.models.grammar import LAX_CHAR, STRICT_CHAR, grammar_of
from jan_server.models.prompt import PromptFormatter, takes_tools

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TEXT = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"ris}"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'


def test_plans():
    assert tools.plan(None, "required") is None and tools.plan([WEATHER], "none") is None
    auto = tools.plan([WEATHER])
    assert auto.lazy and auto.parameters()["grammar_triggers"] == [tools.TRIGGER]
    required = tools.plan([WEATHER], "required")
    assert not required.lazy and required.parameters()["grammar_triggers"] == []
    assert "{0,3}" in required.grammar and "{0," not in tools.plan([WEATHER], "required", parallel_tool_calls=False).grammar
    assert "{0," not in tools.plan([WEATHER], {"type": "function", "function": {"name": "get_weather"}}).grammar
    with pytest.raises(InvalidRequestError) as error:
        tools.plan([WEATHER], {"type": "function", "function": {"name": "other"}})
    assert error.value.param == "tool_choice"


def test_parameters_with_local_refs_make_a_grammar():
    """Each function's `#/$defs/...` refs resolve against its own parameters (pydantic writes them so)."""
    parameters = {"type": "object", "properties": {"place": {"$ref": "#/$defs/Place"}}, "required": ["place"],
                  "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    other = {"type": "function", "function": {"name": "go", "parameters": parameters}}
    assert "root ::=" in tools.plan([WEATHER, other], "required").grammar


def test_parse_whole_output():
    content, calls = tools.parse(TEXT)
    assert content is None and [call.name for call in calls] == ["get_weather", "get_weather"]
    assert [json.loads(call.arguments) for call in calls] == [{"city": 'Pa"ris}'}, {"city": "Rome"}]
    assert all(call.id.startswith("call_") for call in calls) and calls[0].id != calls[1].id
    assert tools.parse("Just text.") == ("Just text.", [])



def test_a_call_cut_short_is_a_partial_call_never_markup():
    """The token limit stops a call: the call as far as it got once its name was written, else the text before it."""
    content, [call] = tools.parse('Sure.<tool_call>\n{"name": "get_weather", "arguments": {"ci')
    assert content is None and (call.name, call.arguments) == ("get_weather", '{"ci')
    assert tools.parse('Sure.<tool_call>\n{"name": "get_wea') == ("Sure.", [])
    assert tools.parse("<tool_call>\n{") == (None, [])


def test_streamed_output_gives_the_same_calls_in_pieces():
    parser = tools.ToolCallParser()
    events = [event for char in TEXT for event in parser.feed(char)] + list(parser.close())
    assert "".join(event[1] for event in events if event[0] == "content") == "Let me check."
    heads = [event for event in events if event[0] == "call"]
    assert [(index, name) for _, index, _, name in heads] == [(0, "get_weather"), (1, "get_weather")]
    for index, call in enumerate(parser.calls):
        assert "".join(event[2] for event in events if event[0] == "arguments" and event[1] == index) == call.arguments
    assert [call.id for call in parser.calls] == [head[2] for head in heads]


def test_generic_prompt_describes_tools_and_history():
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    system, user, assistant, tool = tools.prompt_messages(history, [WEATHER])
    assert system["content"].startswith("Be brief.\n\n") and json.dumps(WEATHER) in system["content"]
    assert user == {"role": "user", "content": "Weather?"}
    assert assistant["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert tool == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    assert tools.prompt_messages(history[1:2], [WEATHER])[0]["role"] == "system"
    assert tools.prompt_messages(history[1:2], None) == history[1:2]


class TemplateModel:
    """What PromptFormatter reads of a model, with a chat template of our own."""

    def __init__(self, template: str):
        self.template = template

    def metadata(self):
        return {"tokenizer.chat_template": self.template}

    def token_eos(self):
        return 2

    def token_bos(self):
        return 1

    def token_get_text(self, token):
        return {1: "<s>", 2: "</s>"}[token]


TOOL_TEMPLATE = (
    "{% if tools %}TOOLS:{% for tool in tools %} {{ tool.function.name }}{% endfor %}; {% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}[call {{ c.function.name }}]{% endfor %}{% endif %}"
    "{% if m.tool_call_id %}[for {{ m.tool_call_id }}]{% endif %}; {% endfor %}assistant:"
)


def test_a_template_that_reads_tools_gets_them_and_the_openai_messages():
    assert takes_tools(TOOL_TEMPLATE) and not takes_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    formatter = PromptFormatter(TemplateModel(TOOL_TEMPLATE), n_ctx=512)
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    prompt = formatter.format(messages, [WEATHER])
    assert prompt.text == "TOOLS: get_weather; user: Weather?; assistant: [call get_weather]; tool: sunny[for call_1]; assistant:"
    assert formatter.format(messages[:1]).text == "user: Weather?; assistant:"


def test_a_template_without_tools_gets_the_generic_prompt():
    formatter = PromptFormatter(TemplateModel("{% for m in messages %}{{ m.role }}: {{ m.content }}; {% endfor %}"), n_ctx=512)
    prompt = formatter.format([{"role": "user", "content": "Weather?"}], [WEATHER])
    assert prompt.text.startswith("system: ") and "<tools>" in prompt.text and prompt.text.endswith("user: Weather?; ")


def test_json_strings_of_a_schema_grammar_hold_no_raw_control_characters():
    """llama-cpp-python's converter allows them (a raw newline in a string made Responses' JSON unparseable)."""
    person = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    for grammar in (grammar_of({"type": "json_schema", "json_schema": {"schema": person}}), tools.plan([WEATHER], "required").grammar):
        assert STRICT_CHAR in grammar and LAX_CHAR not in grammar
