"""Tool (function) calling on local models, free of HTTP: what a request's tools mean for one generation
(`plan`), the prompt that offers them (`prompt_messages`), the grammar that makes a call valid, and the parser
that turns the model's output, whole or streamed, back into calls (`ToolCallParser`).

Calls are written as Hermes/Qwen-style blocks, which models trained for tools emit themselves:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A custom (freeform) tool's call carries its input as plain text after the name, in the tool's format (a grammar
from jan_server.models.freeform):

    <tool_call>
    {"name": "apply_patch"}
    *** Begin Patch ...
    </tool_call>

For `required` and a named function the grammar holds from the first token, so the reply is one call (named) or
up to MAX_CALLS calls (`required`; one without `parallel_tool_calls`) whose arguments validate against the
function's parameters. For `auto` the same grammar is lazy: the model writes text freely, and once it writes
TRIGGER the grammar completes the call it started.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from jan_server.errors import InvalidRequestError
from jan_server.models import freeform
from jan_server.models.grammar import convertible, strict_strings

TRIGGER = "<tool_call>"
END = "</tool_call>"
#: Calls one reply may hold with `parallel_tool_calls`: the grammar must end somewhere, and a small model left
#: unbounded may repeat its call until the token limit.
MAX_CALLS = 4

INSTRUCTIONS = (
    "You may call one or more functions to assist with the user query. You are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
CUSTOM_INSTRUCTIONS = (
    "\n\nA tool of type custom takes plain text instead of JSON arguments: call it as\n<tool_call>\n"
    '{"name": <tool-name>}\n<the input, as its format says>\n</tool_call>'
)


class ToolCall(NamedTuple):
    id: str
    name: str
    arguments: str  # a JSON object, as written by the model


@dataclass
class ToolPlan:
    """How one generation may call tools: `grammar` (GBNF) constrains the calls; when `lazy`, only from TRIGGER on."""

    tools: list[dict]  # chat's tool objects, {"type": "function", "function": {...}} or {"type": "custom", "custom": {...}}
    grammar: str
    lazy: bool

    def parameters(self) -> dict:
        """The generation parameters that apply it (Runner.prepare's `grammar`, `grammar_triggers`)."""
        return {"grammar": self.grammar, "grammar_triggers": [TRIGGER] if self.lazy else []}

    @property
    def customs(self) -> set[str]:
        """The names of its custom tools, whose calls carry plain-text input rather than JSON arguments."""
        return custom_names(self.tools)


def custom_names(tools: list[dict]) -> set[str]:
    return {tool["custom"]["name"] for tool in tools if tool.get("type") == "custom"}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def plan(tools: list[dict] | None, tool_choice: str | dict | None = None, parallel_tool_calls: bool | None = True,
         max_calls: int | None = None) -> ToolPlan | None:
    """What `tools` + `tool_choice` ask of this generation; None when no tool may be called (no tools, `none`).
    `max_calls` bounds the calls of one reply (below MAX_CALLS).

    Raises InvalidRequestError (param `tool_choice`) for a named tool that is not in `tools`, and (param
    `tools`) for parameters or a custom tool's format the grammar cannot express."""
    if not tools or tool_choice == "none":
        return None
    choice = tool_choice or "auto"
    offered = [tool[tool.get("type", "function")] for tool in tools]
    customs = custom_names(tools)
    if isinstance(choice, dict):
        kind = choice.get("type", "function")
        name = choice[kind]["name"]
        offered = [tool for tool in offered if tool["name"] == name and (name in customs) == (kind == "custom")]
        if not offered:
            raise InvalidRequestError(f"Tool choice '{name}' is not one of the {kind} tools in `tools`.", param="tool_choice")
    most = 1 if isinstance(choice, dict) or parallel_tool_calls is False else min(MAX_CALLS, max_calls or MAX_CALLS)
    functions = [tool for tool in offered if tool["name"] not in customs]
    return ToolPlan(tools=tools, grammar=call_grammar(functions, most, [tool for tool in offered if tool["name"] in customs]), lazy=choice == "auto")


def call_grammar(functions: list[dict], most: int = 1, customs: list[dict] = ()) -> str:
    """GBNF for 1..`most` call blocks, each naming one of `functions` with arguments that match its parameters,
    or one of `customs` (chat's custom tools) with an input in its format."""
    block = f'"{TRIGGER}\\n" space call space "\\n{END}"'
    rules, blocks = "", [block] if functions else []
    for at, custom in enumerate(customs):
        try:
            input_rules, input_root = freeform.gbnf(custom.get("format"), f"custom{at}")
        except freeform.UnsupportedGrammar as exc:
            raise InvalidRequestError(f"The format of the custom tool '{custom['name']}' cannot be translated to a grammar: {exc}.",
                                      param="tools", code="unsupported_grammar") from None
        head = freeform.literal(f'{TRIGGER}\n{{"name": {json.dumps(custom["name"], ensure_ascii=False)}}}\n')
        rules += input_rules
        blocks.append(f'{head} {input_root} "\\n{END}"')
    if functions:
        rules = function_rules(functions) + "\n" + rules
    one = blocks[0] if len(blocks) == 1 else "(" + " | ".join(blocks) + ")"
    more = f' ("\\n" {one}){{0,{most - 1}}}' if most > 1 else ""
    return f"{rules}\nroot ::= {one}{more}\n"


def function_rules(functions: list[dict]) -> str:
    """The rules whose `call` is a call object naming one of `functions` with arguments that match its parameters."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False)
    calls = []
    try:
        for function in functions:
            # each schema's own `#/...` refs resolve against that schema, so resolve them before wrapping it
            parameters = converter.resolve_refs(convertible(function.get("parameters") or {"type": "object"}), f"tool:{function['name']}")
            calls.append({
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            })
        converter.visit(calls[0] if len(calls) == 1 else {"anyOf": calls}, "call")
        return strict_strings(converter.format_grammar())
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors on schemas it cannot handle
        raise InvalidRequestError(f"Unsupported function parameters: {exc}", param="tools", code="invalid_function_parameters") from None


def prompt_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The chat for a template that knows nothing of tools: the tools described in the system message, earlier
    calls written as call blocks, tool results as user turns in <tool_response> tags."""
    out = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            blocks = [block(call["function"]["name"], call["function"]["arguments"]) if call.get("type", "function") == "function"
                      else custom_block(call["custom"]["name"], call["custom"]["input"]) for call in message["tool_calls"]]
            content = "\n".join(([content] if content else []) + blocks)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools:
        listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
        instructions = INSTRUCTIONS.format(tools=listed) + (CUSTOM_INSTRUCTIONS if any(tool.get("type") == "custom" for tool in tools) else "")
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


def block(name: str, arguments: str) -> str:
    """One call as the model writes it."""
    try:
        arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        pass  # history is the client's: show it as it came
    return f'{TRIGGER}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {arguments}}}\n{END}'


def custom_block(name: str, text: str) -> str:
    """One custom tool's call as the model writes it."""
    return f'{TRIGGER}\n{{"name": {json.dumps(name, ensure_ascii=False)}}}\n{text}\n{END}'


_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*(?:,\s*"arguments"\s*:\s*|(\}\n))')
def held(text: str, marker: str) -> int:
    """How many of `text`'s last characters may begin `marker` (held back until the next text tells)."""
    return next((size for size in range(min(len(marker) - 1, len(text)), 0, -1) if text.endswith(marker[:size])), 0)


#: Where a custom call's input ends.
INPUT_END = f"\n{END}"


class ToolCallParser:
    """Reads the model's output as it streams and tells text from calls.

    `feed(text)` yields events: ("content", text) for text outside calls (none after the first call), ("call",
    index, id, name) once a call's name is read, ("arguments", index, fragment) for the pieces of its arguments
    (of a custom tool's call: its input).
    `close()` yields what was held back. `calls` holds the completed calls."""

    def __init__(self):
        self.calls: list[ToolCall] = []
        self._buffer = ""
        self._state = "text"  # text -> head -> arguments -> tail -> text ...
        self._current: dict = {}
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> Iterator[tuple]:
        self._buffer += text
        while True:
            step = getattr(self, f"_{self._state}")()
            if step is None:
                return
            yield from step

    @property
    def cut(self) -> ToolCall | None:
        """The call the output stopped in (its name read, its arguments so far), if it stopped in one."""
        return ToolCall(**self._current) if self._state in ("arguments", "input", "tail") else None

    def close(self) -> Iterator[tuple]:
        rest, self._buffer = self._buffer, ""
        if self._state == "text" and rest and not self.calls:
            yield ("content", rest)

    def _text(self):
        start = self._buffer.find(TRIGGER)
        if start < 0:
            cut = len(self._buffer) - held(self._buffer, TRIGGER)
            text, self._buffer = self._buffer[:cut], self._buffer[cut:]
            return [("content", text)] if text and not self.calls else None
        text, self._buffer, self._state = self._buffer[:start], self._buffer[start + len(TRIGGER):], "head"
        return [("content", text)] if text and not self.calls else []

    def _head(self):
        match = _HEAD.match(self._buffer)
        if not match:
            return None
        name = json.loads(f'"{match.group(1)}"')
        self._current = {"id": call_id(), "name": name, "arguments": ""}
        self._buffer, self._state = self._buffer[match.end():], "input" if match.group(2) else "arguments"
        self._depth, self._in_string, self._escaped = 0, False, False
        return [("call", len(self.calls), self._current["id"], name)]

    def _arguments(self):
        if not self._current["arguments"]:
            self._buffer = self._buffer.lstrip()  # the grammar allows a space before the object
        if not self._buffer:
            return None
        end = None
        for position, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = position + 1
                    break
        cut = len(self._buffer) if end is None else end
        fragment, self._buffer = self._buffer[:cut], self._buffer[cut:]
        self._current["arguments"] += fragment
        if end is not None:
            self._state = "tail"
        return [("arguments", len(self.calls), fragment)]

    def _input(self):
        end = self._buffer.find(INPUT_END)
        if end < 0:
            end = len(self._buffer) - held(self._buffer, INPUT_END)
            if not end:
                return None
        else:
            self._state = "tail"
        fragment, self._buffer = self._buffer[:end], self._buffer[end:]
        self._current["arguments"] += fragment
        return [("arguments", len(self.calls), fragment)] if fragment else []

    def _tail(self):
        end = self._buffer.find(END)
        if end < 0:
            return None
        self.calls.append(ToolCall(**self._current))
        self._buffer, self._state = self._buffer[end + len(END):], "text"
        return []


def parse(text: str) -> tuple[str | None, list[ToolCall]]:
    """A whole output's calls, the last one as far as it got if the output was cut short in it (once its name
    was written), and its text: None beside calls, else the text before any call markup (never the markup)."""
    parser = ToolCallParser()
    events = [*parser.feed(text), *parser.close()]
    calls = parser.calls + ([parser.cut] if parser.cut else [])
    if calls:
        return None, calls
    content = "".join(event[1] for event in events if event[0] == "content")
    return (content if content.strip() else None), []
