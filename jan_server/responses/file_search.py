"""The `file_search` tool of the Responses API, run by this server: the model is offered a function `file_search`
(`queries`, through the same call grammar as function tools); once it called it, the server searches the tool's
vector stores (jan_server.retrieval.search, hybrid), the call becomes OpenAI's `file_search_call` item, and the
model answers in a second pass of the same response with the results in its prompt (as the call's tool message).

A small model's queries often miss the question's words (SmolLM2-135M writes "1000"), so the user's last message
is searched too, as the first of the item's `queries`. The message cites, as a `file_citation` annotation at the
end of its text, the file of the best result put in the prompt: a small model's text cannot say which result it
used, so the citation says what it was given first.
A `file_search_call` holds its `results` only when `include` asks for `file_search_call.results`; given back as
context (a chain, a conversation, an input item) without them, the model sees the queries only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from jan_server.errors import InvalidRequestError, NotFoundError
from jan_server.storage.records import new_id

NAME = "file_search"
KIND = "file_search_call"
INCLUDE = "file_search_call.results"
#: Results put in the prompt when the tool gives no `max_num_results` (a small model's context holds few).
DEFAULT_RESULTS = 5
DESCRIPTION = "Search the user's documents. Give one or more short search queries with the words to look for."
#: Bounded so that a small model's call ends within a few tokens.
PARAMETERS = {"type": "object", "required": ["queries"], "properties": {
    "queries": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 32}, "minItems": 1, "maxItems": 2}}}
#: The longest query searched (as searchVectorStore's).
MAX_QUERY = 4096


def offered() -> dict:
    """The function the model calls to search (chat's tool object)."""
    return {"type": "function", "function": {"name": NAME, "description": DESCRIPTION, "parameters": PARAMETERS}}


def tool_of(tools: list[dict] | None) -> dict | None:
    """The request's file_search tool; a second one, or a function tool of the same name, is a 400."""
    found = [tool for tool in tools or [] if tool.get("type") == NAME]
    if len(found) > 1:
        raise InvalidRequestError("Only one file_search tool may be given.", param="tools", code="unsupported_tool")
    if found and any(tool.get("type", "function") == "function" and tool.get("name") == NAME for tool in tools):
        raise InvalidRequestError(f"A function tool may not be named '{NAME}' beside the file_search tool.", param="tools")
    return found[0] if found else None


def call_item() -> dict:
    return {"id": new_id("fs_"), "type": KIND, "status": "in_progress", "queries": [], "results": None}


def stored(given: dict) -> dict:
    """A file_search_call item given back as input."""
    return {"id": new_id("fs_"), "type": KIND, "status": given.get("status") or "completed",
            "queries": list(given.get("queries") or []), "results": given.get("results")}


def chat_messages(item: dict) -> list[dict]:
    """The call as the model sees it: its function call, then a tool message with its results (when kept)."""
    call = {"id": item["id"], "type": "function", "function": {"name": NAME, "arguments": json.dumps({"queries": item["queries"]})}}
    results = item.get("results")
    if results is None:
        found = "The results of this search were not kept."
    elif not results:
        found = "No document matched."
    else:
        found = "\n\n".join(f"[{at}] {result['filename']}:\n{result['text']}" for at, result in enumerate(results, 1))
    return [{"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": item["id"], "content": found}]


@dataclass
class FileSearch:
    """A response's file_search tool: its stores, options and what its searches found (by item id)."""

    tool: dict
    include: bool
    searcher: object  # jan_server.retrieval.search.Searcher
    question: str | None  # the user's last message
    found: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict, searcher, store, question: str | None) -> FileSearch | None:
        """The request's file_search tool, its vector stores checked (404 for one that does not exist)."""
        tool = tool_of(body.get("tools"))
        if tool is None:
            return None
        for at, store_id in enumerate(tool["vector_store_ids"]):
            try:
                store.vector_stores.get(store_id)
            except NotFoundError:
                raise NotFoundError("vector_store", store_id, param=f"tools.vector_store_ids[{at}]") from None
        return cls(tool, INCLUDE in (body.get("include") or []), searcher, question)

    def run(self, item: dict, arguments: str) -> None:
        """Search the question and the call's queries over every store: each result at its best score over the
        queries, best first."""
        try:
            written = [query for query in json.loads(arguments).get("queries", []) if isinstance(query, str)]
        except (json.JSONDecodeError, AttributeError):
            written = []
        queries = list(dict.fromkeys(query.strip()[:MAX_QUERY] for query in [self.question or "", *written] if query.strip()))
        item["queries"] = queries
        limit = self.tool.get("max_num_results") or DEFAULT_RESULTS
        options = {"max_num_results": limit, "filters": self.tool.get("filters"), "ranking_options": self._ranking()}
        best: dict[tuple, dict] = {}  # each query searched alone (a junk query's ranking fused in would bury the question's)
        for store_id, query in ((store_id, query) for store_id in self.tool["vector_store_ids"] for query in queries):
            page = self.searcher.search(store_id, {"query": query, **{key: value for key, value in options.items() if value is not None}})
            for hit in page["data"]:
                result = {"file_id": hit["file_id"], "filename": hit["filename"], "score": hit["score"], "attributes": hit["attributes"],
                          "text": "".join(part["text"] for part in hit["content"])}
                key = (result["file_id"], result["text"])
                if key not in best or best[key]["score"] < result["score"]:
                    best[key] = result
        results = sorted(best.values(), key=lambda result: -result["score"])[:limit]
        self.found[item["id"]] = results
        item.update(status="completed", results=results if self.include else None)

    def _ranking(self) -> dict | None:
        ranking = {key: value for key, value in (self.tool.get("ranking_options") or {}).items() if value is not None}
        return ranking or None

    def full(self, item: dict) -> dict:
        """The item with the results it found, whether or not the response shows them (for the model's prompt)."""
        return {**item, "results": self.found.get(item["id"], item.get("results"))}

    def cited(self, index: int) -> list[dict]:
        """file_citation annotations at `index` of the text: the file of each search's best result, once."""
        files = {results[0]["file_id"]: results[0]["filename"] for results in self.found.values() if results}
        return [{"type": "file_citation", "file_id": file_id, "filename": filename, "index": index} for file_id, filename in files.items()]
