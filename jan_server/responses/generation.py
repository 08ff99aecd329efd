"""One response: its Response object as it goes from created to its final state, the job that generates its
text, and how it is stored once done (see jan_server.responses.service for how it starts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Iterator

from jan_server.errors import ApiError
from jan_server.models.jobs import Job
from jan_server.responses import items
from jan_server.storage.records import new_id
from jan_server.storage.store import Store

#: The final status of a response by the job's finish_reason; None: cancelled (by its client or a cancel call).
STATUS = {"stop": "completed", "length": "incomplete", None: "cancelled"}


def response_object(response_id: str, body: dict, job: Job, conversation_id: str | None) -> dict:
    """A new response, in progress, echoing the request's settings as OpenAI's Response object does (`usage`
    comes once it ends: OpenAI's schema has no null for it)."""
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
        "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "truncation": body.get("truncation") or "disabled",
        "metadata": body.get("metadata") or {},
    }


def usage_of(job: Job) -> dict:
    usage = job.usage
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


@dataclass
class Generation:
    """A response being generated. `texts()` yields its text as it comes; `finish()` or `fail()` gives the final
    object and stores it (when `store`; a conversation gets the input and output appended either way)."""

    response: dict
    job: Job
    input_items: list[dict]
    store: Store
    on_first_text: Callable[["Generation"], None] | None = None
    message_id: str = field(default_factory=lambda: new_id("msg_"))
    text: str = ""

    @property
    def id(self) -> str:
        return self.response["id"]

    def texts(self) -> Iterator[str]:
        """The text deltas; raises the job's ApiError if generation fails."""
        for delta in self.job:
            if not self.text and self.on_first_text is not None:
                self.on_first_text(self)
            self.text += delta
            yield delta

    def message(self, status: str) -> dict:
        """The output message as it stands."""
        return items.message("assistant", self.text, self.message_id, status)

    def finish(self) -> dict:
        """The final object once the job ended (completed, incomplete at max_output_tokens, or cancelled)."""
        status = STATUS[self.job.finish_reason]
        now = int(time.time())
        output = [self.message("completed" if status == "completed" else "incomplete")] if self.text or status != "cancelled" else []
        self.response = {
            **self.response,
            "status": status,
            "completed_at": now if status == "completed" else None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output,
            "usage": usage_of(self.job),
        }
        self._save(appended=self.input_items + output if status != "cancelled" else [])
        return self.response

    def fail(self, error: ApiError) -> dict:
        self.response = {**self.response, "status": "failed", "error": {"code": "server_error", "message": error.message}, "usage": usage_of(self.job)}
        self._save(appended=[])
        return self.response

    def save_state(self, status: str) -> None:
        """Store the response as it stands with `status` (a background response: queued, then in progress)."""
        self.response = {**self.response, "status": status}
        self._save(appended=[])

    def _save(self, appended: list[dict]) -> None:
        conversation = self.response["conversation"]
        if self.response["store"]:
            self.store.responses.save(self.response, self.input_items, appended)
        elif conversation and appended:
            self.store.conversations.add_items(conversation["id"], appended)
