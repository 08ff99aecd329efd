"""OpenAI's hosted tools, which run on OpenAI's side, and what this server does with each: none of them runs here
yet, so a request may list them (Codex CLI sends `web_search` with every request) and they are left out: not
offered to the model, not in the response's `tools` echo; a `tool_choice` forcing one is a 400, and so is
`required` when only hosted tools are given (jan_server.responses.tooling). To make one
runnable, give it a runner and offer it, as jan_server.responses.file_search does for `file_search`."""

from __future__ import annotations

from jan_server.errors import InvalidRequestError

#: Hosted tool type -> why this server leaves it out.
LEFT_OUT = {
    "web_search": "this server makes no requests off the machine",
    "web_search_preview": "this server makes no requests off the machine",
    "image_generation": "this server runs text models only",
    "code_interpreter": "this server runs no code",
    "computer_use": "this server drives no computer",
    "computer_use_preview": "this server drives no computer",
    "local_shell": "the shell is the client's (offer it as a function tool)",
    "mcp": "this server connects to no MCP server (offer its tools as function tools)",
}


def offered(tools: list[dict] | None) -> list[dict]:
    """The tools the model is offered: the request's tools but the hosted ones, which are left out."""
    return [tool for tool in tools or [] if tool.get("type", "function") not in LEFT_OUT]


def check_choice(choice) -> None:
    """A `tool_choice` forcing a hosted tool is a 400 saying why it cannot run."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in LEFT_OUT:
        raise InvalidRequestError(f"tool_choice forces the hosted tool '{kind}', which this server does not run: {LEFT_OUT[kind]}.", param="tool_choice", code="unsupported_tool")
