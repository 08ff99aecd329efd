"""One response: its Response object as it goes from created to its final state, the job that generates its
text, and how it is stored once done (see jan_server.responses.service for how it starts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Iterator

from jan_server.errors import ApiError
from jan_server.models import tools
from jan_server.models.jobs import Job
from jan_server.responses import file_search, items, tooling
from jan_server.storage.records import new_id
from jan_server.storage.store import Store

#: The final status of a response by the job's finish_reason; None: cancelled (by its client or a cancel call).
STATUS = {"stop": "completed", "length": "incomplete", None: "cancelled"}


def response_object(response_id: str, body: dict, job: Job, conversation_id: str | None) -> dict:
    """A new response, in progress, echoing the request's settings with every field Open Responses' and OpenAI's
    Response objects require (null where unknown; `usage` is null until it ends)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "conversation": {"id": conversation_id} if conversation_id else None,
        "reasoning": None,
        "store": body.get("store") is not False,
        "background": bool(body.get("background")),
        "temperature": job.sampling.temperature,
        "top_p": job.sampling.top_p,
        "presence_penalty": job.sampling.presence_penalty,
        "frequency_penalty": job.sampling.frequency_penalty,
        "top_logprobs": 0,
        "max_tool_calls": body.get("max_tool_calls"),
        "service_tier": "default",
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "usage": None,
        "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tooling.echoed(body),
        "truncation": body.get("truncation") or "disabled",
        "metadata": body.get("metadata") or {},
    }


def usage_of(*usages: dict) -> dict:
    """Responses' usage from chat usages: a response's passes (one, or two around a file search), each prompt counted."""
    count = lambda key: sum(usage[key] for usage in usages)
    return {
        "input_tokens": count("prompt_tokens"),
        "input_tokens_details": {"cached_tokens": sum(usage["prompt_tokens_details"]["cached_tokens"] for usage in usages), "cache_write_tokens": 0},
        "output_tokens": count("completion_tokens"),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": count("total_tokens"),
    }


@dataclass
class Generation:
    """A response being generated. `outputs()` yields its output as it comes; `finish()` or `fail()` gives the
    final object and stores it (when `store`; a conversation gets the input and output appended either way).

    With a tool plan (jan_server.models.tools) the model's text is read as message text and tool calls
    (`function_call` and `custom_tool_call` items, named as `tools` has them): the message (if it has any text)
    comes first, then the calls, in order.

    With a `file_search` tool (jan_server.responses.file_search), a search call is run here once the model wrote
    it, and a second job (`resume`) continues the answer with its results: the call is a `file_search_call` item,
    and the message comes after it (or before, if the model wrote text before calling)."""

    response: dict
    job: Job
    input_items: list[dict]
    store: Store
    plan: tools.ToolPlan | None = None
    context: list[dict] = field(default_factory=list)  # the items before the input (chain or conversation)
    tools: tooling.Offer = field(default_factory=lambda: tooling.Offer(None))  # the tools offered, by the names the model calls them
    owner: str | None = None  # the process that runs it, for a background response (stored before it ends)
    stored: bool = False  # inserted: from then on only updated
    on_first_text: Callable[["Generation"], None] | None = None
    message_id: str = field(default_factory=lambda: new_id("msg_"))
    text: str = ""  # the message's text
    raw: str = ""  # all the model wrote
    calls: list[dict] = field(default_factory=list)  # the call items, as they stream
    search: file_search.FileSearch | None = None
    resume: Callable[["Generation"], Job] | None = None  # the job answering after a search
    spent: list[Job] = field(default_factory=list)  # the jobs of the passes before this one
    message_at: int | None = None  # how many calls come before the message (set by its first text)

    def __post_init__(self):
        self._parser = tools.ToolCallParser() if self.plan is not None else None

    @property
    def id(self) -> str:
        return self.response["id"]

    def outputs(self) -> Iterator[tuple]:
        """("text", delta) for the message's text, ("call", index) when call `index` starts, ("arguments", index,
        fragment) for its arguments (a custom tool's call: its input), ("searching", index) and ("searched", index)
        around a file search; raises the job's ApiError if generation fails."""
        yield from self._pass()
        searches = [index for index, call in enumerate(self.calls) if call["type"] == file_search.KIND]
        if not searches or self.job.finish_reason != "stop" or self.resume is None:
            return
        for index in searches:  # one: a reply offered file_search makes one call
            self.calls[index]["status"] = "searching"
            yield ("searching", index)
            self.search.run(self.calls[index], self._parser.calls[index].arguments)
            yield ("searched", index)
        self.spent.append(self.job)
        self.job, self._parser = self.resume(self), None
        yield from self._pass()

    def _pass(self) -> Iterator[tuple]:
        for delta in self.job:
            if not self.raw and self.on_first_text is not None:
                self.on_first_text(self)
            self.raw += delta
            if self._parser is None:
                yield from self._write(delta)
                continue
            for event in self._parser.feed(delta):
                yield from self._read(event)
        if self._parser is not None:
            for event in self._parser.close():
                yield from self._read(event)

    def _write(self, text: str) -> Iterator[tuple]:
        self.text += text
        if self.message_at is None and self.text.strip():
            self.message_at = len(self.calls)
        yield ("text", text)

    def _read(self, event: tuple) -> Iterator[tuple]:
        if event[0] == "content":
            yield from self._write(event[1])
        elif event[0] == "call":
            _, index, call_id, name = event
            tool = self.tools.called(name)
            if tool.kind == file_search.NAME:
                self.calls.append(file_search.call_item())
            else:
                make = items.custom_tool_call if tool.kind == "custom" else items.function_call
                self.calls.append(make(call_id, tool.name, "", status="in_progress", namespace=tool.namespace))
            yield ("call", index)
        elif self.calls[event[1]]["type"] != file_search.KIND:  # a search's queries show once it ran
            _, index, fragment = event
            self.calls[index][items.CALL_TEXT[self.calls[index]["type"]]] += fragment
            yield ("arguments", index, fragment)

    @property
    def has_message(self) -> bool:
        """Whether the output has a message: text, or nothing else (text that is only blank beside calls is none)."""
        return bool(self.text.strip()) or not self.calls

    def message(self, status: str) -> dict:
        """The output message as it stands (citing the files its searches found)."""
        message = items.message("assistant", self.text, self.message_id, status)
        if self.search is not None and self.search.found:
            message["content"][0]["annotations"] = self.search.cited(len(self.text))
        return message

    def call(self, index: int) -> dict:
        """Call `index` as it stands: completed once the model closed it (a file search: once it ran)."""
        if self.calls[index]["type"] == file_search.KIND:
            return dict(self.calls[index])
        completed = self._parser is not None and index < len(self._parser.calls)
        return {**self.calls[index], "status": "completed" if completed else "in_progress"}

    def output(self, status: str) -> list[dict]:
        message = [self.message("completed" if status == "completed" else "incomplete")] if self.has_message else []
        calls = [self.call(index) for index in range(len(self.calls))]
        calls = [call if call["status"] == "completed" else {**call, "status": "incomplete"} for call in calls]
        return calls[: self.message_at or 0] + message + calls[self.message_at or 0:]

    def finish(self) -> dict:
        """The final object once the job ended (completed, incomplete at max_output_tokens, or cancelled). If it
        cannot be stored (its conversation deleted meanwhile, the database locked), it is stored failed with that
        error, which is raised."""
        status = STATUS[self.job.finish_reason]
        now = int(time.time())
        output = self.output(status) if self.raw or status != "cancelled" else []
        self.response = {
            **self.response,
            "status": status,
            "completed_at": now if status == "completed" else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output,
            "usage": self._usage(),
        }
        try:
            self._save(appended=self.input_items + output if status != "cancelled" else [])
        except ApiError as exc:
            self.fail(exc)
            raise
        return self.response

    @property
    def chain(self) -> list[dict]:
        """The whole context a response continuing this one starts from (once it ended)."""
        return self.context + self.input_items + self.response["output"]

    def _usage(self) -> dict:
        return usage_of(*(job.usage for job in [*self.spent, self.job]))

    def fail(self, error: ApiError) -> dict:
        self.response = {**self.response, "status": "failed", "error": {"code": "server_error", "message": error.message}, "usage": self._usage()}
        self._save(appended=[])
        return self.response

    def save_state(self, status: str) -> None:
        """Store the response as it stands with `status` (a background response: queued, then in progress)."""
        self.response = {**self.response, "status": status}
        self._save(appended=[])

    def _save(self, appended: list[dict]) -> None:
        """Insert the response the first time, then update it; an update that finds no row (deleted, or failed as
        orphaned) writes nothing and stops the generation."""
        conversation = self.response["conversation"]
        if not self.response["store"]:
            if conversation and appended:
                self.store.conversations.add_items(conversation["id"], appended)
        elif self.stored:
            if not self.store.responses.update(self.response, self.owner, appended):
                self.job.cancel()
        else:
            self.store.responses.insert(self.response, self.input_items, appended, owner=self.owner)
            self.stored = True
