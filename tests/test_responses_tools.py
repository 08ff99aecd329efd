"""Tool types of the Responses API through the official `openai` package against the real server and model:
namespace tools, custom (freeform) tools with a Lark and a regex grammar, hosted tools left out, max_tool_calls;
bodies and stream events validated against OpenAI's published schemas."""

from __future__ import annotations

import json
import re

import httpx
import lark
import openai
import pytest

from tests.live_server import PATIENT
from tests.openai_reference import assert_valid
from tests.test_responses import MODEL, WEATHER, create, published

#: Codex CLI's apply_patch grammar (codex-rs, tool_apply_patch.lark), as Codex sends it.
APPLY_PATCH = r'''start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
'''
#: The same language for lark's own parser, which refuses terminals that match the empty string.
SAME_PATCHES = APPLY_PATCH.replace("/(.*)/", "/(.+)/?")
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
              "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH}}
PHONE = r"\d{3}-\d{4}"
DIAL_TOOL = {"type": "custom", "name": "dial", "description": "Dial a phone number.", "format": {"type": "grammar", "syntax": "regex", "definition": PHONE}}
HOSTED = [{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}]  # file_search runs (test_file_search.py)


def test_a_namespace_function_is_called_by_its_name_and_namespace(openai_client):
    namespace = {"type": "namespace", "name": "weather", "description": "Weather tools.", "tools": [WEATHER]}
    called = create(openai_client, input="What is the weather in Paris?", tools=[namespace, {"type": "web_search"}], tool_choice="required",
                    parallel_tool_calls=False, temperature=0, max_output_tokens=64)
    call = called.output[0]
    assert called.status == "completed" and call.type == "function_call"
    assert (call.namespace, call.name) == ("weather", "get_weather") and json.loads(call.arguments)["city"]
    assert [tool.type for tool in called.tools] == ["namespace"] and called.tools[0].tools[0].name == "get_weather"
    answered = create(openai_client, previous_response_id=called.id, tools=[namespace], max_output_tokens=16, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temperature_c": 18})}])
    assert answered.status in ("completed", "incomplete") and answered.usage.input_tokens > called.usage.input_tokens


def test_a_custom_tool_with_codexs_lark_grammar_writes_a_patch_that_parses(openai_client):
    called = create(openai_client, input="Add a file hello.txt saying hi.", tools=[PATCH_TOOL], tool_choice={"type": "custom", "name": "apply_patch"},
                    temperature=0, max_output_tokens=96)
    call = called.output[0]
    assert called.status == "completed" and call.type == "custom_tool_call" and call.name == "apply_patch"
    lark.Lark(SAME_PATCHES).parse(call.input)  # raises unless the input is a patch
    answered = create(openai_client, previous_response_id=called.id, tools=[PATCH_TOOL], max_output_tokens=16, input=[
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done."}])
    assert answered.status in ("completed", "incomplete")
    listed = openai_client.responses.input_items.list(answered.id)
    assert [item.type for item in listed.data] == ["custom_tool_call_output"]


def test_a_streamed_custom_tool_call_with_a_regex_grammar(server):
    body = {"model": MODEL, "input": "Call Ann.", "tools": [DIAL_TOOL], "tool_choice": "required", "parallel_tool_calls": False,
            "temperature": 0, "max_output_tokens": 48, "stream": True}
    with httpx.stream("POST", f"{server.api_url}/responses", json=body, timeout=PATIENT) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    for event in events:
        assert_valid(published(event), "ResponseStreamEvent")
    kinds = [event["type"] for event in events]
    deltas = kinds.count("response.custom_tool_call_input.delta")
    assert deltas >= 1 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.custom_tool_call_input.delta"] * deltas,
        "response.custom_tool_call_input.done", "response.output_item.done", "response.completed",
    ]
    written = "".join(event["delta"] for event in events if event["type"] == "response.custom_tool_call_input.delta")
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "custom_tool_call" and call["input"] == written and re.fullmatch(PHONE, written)


@pytest.mark.parametrize(("syntax", "definition", "named"), [
    ("lark", 'start: start "a" | "b"', "left-recursive"),
    ("lark", "start: WORD\n%import common.WORD\n%import common.WS\n%ignore WS", "%ignore"),
    ("lark", "start: undefined_rule", "does not load"),
    ("regex", r"(a)\1", "back-references"),
    ("regex", r"a{100000}", "over 256"),
    ("regex", r"(?i)yes", "case-insensitive"),
])
def test_a_grammar_that_cannot_be_translated_is_a_400_naming_it(openai_client, syntax, definition, named):
    tool = {"type": "custom", "name": "odd", "format": {"type": "grammar", "syntax": syntax, "definition": definition}}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model=MODEL, input="Hi.", tools=[tool], max_output_tokens=4)
    assert refused.value.body["code"] == "unsupported_grammar" and "'odd'" in refused.value.body["message"] and named in refused.value.body["message"]


def test_hosted_tools_are_left_out_and_cannot_be_forced(openai_client):
    response = openai_client.responses.create(model=MODEL, input="Hi.", tools=[*HOSTED, WEATHER], tool_choice="none", max_output_tokens=4)
    assert [tool.type for tool in response.tools] == ["function"]
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model=MODEL, input="Hi.", tools=[*HOSTED, WEATHER], tool_choice={"type": "web_search"}, max_output_tokens=4)
    assert refused.value.body["param"] == "tool_choice" and "web_search" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model=MODEL, input="Hi.", tools=HOSTED, tool_choice="required", max_output_tokens=4)
    assert refused.value.body["param"] == "tool_choice" and "web_search, code_interpreter" in refused.value.body["message"]


def test_max_tool_calls_bounds_the_calls_of_a_response(openai_client):
    done = ["Lima", "Cairo", "Delhi"]  # an earlier turn that called once per city, which the model follows
    shown = [{"role": "user", "content": "What is the weather in Lima, Cairo and Delhi?"},
             *[{"type": "function_call", "call_id": f"call_{city}", "name": "get_weather", "arguments": json.dumps({"city": city})} for city in done],
             *[{"type": "function_call_output", "call_id": f"call_{city}", "output": "20 C"} for city in done],
             {"role": "assistant", "content": "20 C in each."}, {"role": "user", "content": "What is the weather in Paris, Rome and Oslo?"}]
    ask = {"input": shown, "tools": [WEATHER], "tool_choice": "required", "temperature": 0, "max_output_tokens": 200}
    unbounded = create(openai_client, **ask)
    assert len(unbounded.output) > 1  # several calls when it may
    bounded = create(openai_client, **ask, max_tool_calls=1)
    assert bounded.max_tool_calls == 1 and [item.type for item in bounded.output] == ["function_call"]
