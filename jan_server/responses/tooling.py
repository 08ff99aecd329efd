"""What a Responses request's tools mean to the model: function tools, custom (freeform) tools and the functions
of `namespace` tools are offered as chat's tools (jan_server.models.tools writes them into the prompt and the call
grammar), the `file_search` tool as a function the server runs (jan_server.responses.file_search), the other
hosted tools are left out (jan_server.responses.hosted). A namespace's function is offered as
`<namespace>.<name>`, and its calls come back as OpenAI names them: `name` with the `namespace` field."""

from __future__ import annotations

from dataclasses import dataclass, field

from jan_server.errors import InvalidRequestError
from jan_server.models import tools
from jan_server.responses import file_search, hosted
from jan_server.responses.items import qualified


@dataclass
class Tool:
    """One tool as the model is offered it (`offered`: chat's tool object) and as its calls come back."""

    kind: str  # function, custom or file_search
    name: str
    namespace: str | None
    offered: dict


@dataclass
class Offer:
    """The request's tools for one generation: `plan` (None: no call may be made) and the tools by offered name."""

    plan: tools.ToolPlan | None
    tools: dict[str, Tool] = field(default_factory=dict)

    @property
    def chat_tools(self) -> list[dict]:
        return [tool.offered for tool in self.tools.values()]

    def called(self, offered_name: str) -> Tool:
        return self.tools.get(offered_name) or Tool("function", offered_name, None, {})


def _tool(given: dict, namespace: str | None, description: str | None = None) -> Tool:
    kind, name = given.get("type", "function"), given["name"]
    about = " ".join(part for part in (description, given.get("description")) if part) or None
    if kind == "custom":
        spec = {"name": qualified(name, namespace), "description": about, "format": given.get("format")}
    else:
        spec = {"name": qualified(name, namespace), "description": about, "parameters": given.get("parameters")}
    return Tool(kind, name, namespace, {"type": kind, kind: {key: value for key, value in spec.items() if value is not None}})


def offer(body: dict) -> Offer:
    """The request's tools and what `tool_choice`, `parallel_tool_calls` and `max_tool_calls` ask of this generation.

    Raises InvalidRequestError for a `tool_choice` that names no offered tool, or forces a call when no tool can be
    offered (only hosted tools, which it names)."""
    offered: dict[str, Tool] = {}
    if file_search.tool_of(body.get("tools")) is not None:
        offered[file_search.NAME] = Tool(file_search.NAME, file_search.NAME, None, file_search.offered())
    for given in hosted.offered(body.get("tools")):
        if given.get("type") == file_search.NAME:
            continue
        inner = given["tools"] if given.get("type") == "namespace" else [given]
        namespace = given["name"] if given.get("type") == "namespace" else None
        for tool in (_tool(each, namespace, given.get("description") if namespace else None) for each in inner):
            offered[qualified(tool.name, tool.namespace)] = tool
    choice = body.get("tool_choice")
    hosted.check_choice(choice)
    if choice == "required" and not offered:
        left_out = [tool.get("type") for tool in body.get("tools") or []]
        why = f"only hosted tools, which this server does not run ({', '.join(left_out)})" if left_out else "no tools"
        raise InvalidRequestError(f"tool_choice 'required' asks for a tool call, but the request offers {why}.", param="tool_choice", code="unsupported_tool")
    if isinstance(choice, dict):
        choice = _forced(choice, offered)
    parallel = body.get("parallel_tool_calls") if file_search.NAME not in offered else False  # a search, then the answer
    plan = tools.plan([tool.offered for tool in offered.values()], choice, parallel, body.get("max_tool_calls"))
    return Offer(plan, offered)


def _forced(choice: dict, offered: dict[str, Tool]) -> dict:
    """A tool_choice naming one tool, in chat's shape, by the name the model calls it (a namespace's function by
    its own name); `{"type": "file_search"}` forces a search."""
    kind, name = choice["type"], choice.get("name", choice["type"])
    named = [key for key, tool in offered.items() if tool.kind == kind and name in (key, tool.name)]
    if not named:
        raise InvalidRequestError(f"Tool choice '{name}' is not one of the {kind} tools in `tools`.", param="tool_choice")
    chat = "custom" if kind == "custom" else "function"
    return {"type": chat, chat: {"name": named[0]}}


def echoed(body: dict) -> list[dict]:
    """The response's `tools`: the request's tools but the hosted ones left out (see jan_server.responses.hosted)."""
    return [_echo(tool) for tool in hosted.offered(body.get("tools"))]


def _echo(tool: dict) -> dict:
    kind = tool.get("type", "function")
    if kind == "function":
        return {"type": "function", "description": None, "parameters": None, "strict": None, **tool}
    if kind == "namespace":
        return {**tool, "tools": [_echo(each) for each in tool["tools"]]}
    return tool
