"""Compacting a context (POST /v1/responses/compact) and counting a request's prompt tokens
(POST /v1/responses/input_tokens), on the same model runners and prompts as a response.

A compacted context is its user messages, as they were, then one `compaction` item whose `encrypted_content` is the
model's own summary of the conversation (plain text: nothing is encrypted here). Given back as input, the item
reaches the model as a system message (jan_server.responses.items.chat_messages). When the rest of the context is
messages whose transcript fits in a summary's budget, the transcript itself is the summary: no summary could be
reliably shorter, and it is exact and costs no generation (a small model's summary of a short chat can run to its
budget with invented text, and the context it is given back in is then longer than the one compacted)."""

from __future__ import annotations

import threading
import time

from jan_server.responses import items, tooling
from jan_server.responses.generation import usage_of
from jan_server.responses.service import ResponseService, prepare
from jan_server.storage.records import new_id

#: The request that closes the context for the summarising pass, and the most tokens the summary may take.
SUMMARIZE = (
    "Summarize the conversation above for yourself, so that you can continue it from the summary alone: "
    "the facts, names, numbers, decisions and open tasks. Be brief."
)
SUMMARY_TOKENS = 256
#: The usage of a compaction that generated nothing (the transcript is its summary).
NO_USAGE = {"prompt_tokens": 0, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens": 0, "total_tokens": 0}


def compact(service: ResponseService, body: dict, cancelled: threading.Event | None = None) -> dict:
    context, new_items = service.context(body)
    conversation = context + new_items
    kept = [item for item in conversation if item["type"] == "message" and item["role"] == "user"]
    rest = [item for item in conversation if not (item["type"] == "message" and item["role"] == "user")]
    with service.models.serving(body["model"]) as runner:
        summary = transcript(rest)
        if summary is not None and len(runner.model.tokenize(summary.encode("utf-8"), add_bos=False, special=False)) <= SUMMARY_TOKENS:
            usage = NO_USAGE
        else:
            job = prepare(runner, body.get("instructions"), conversation + [items.message("user", SUMMARIZE)], {"max_tokens": SUMMARY_TOKENS}, "auto", [])
            if cancelled is not None:
                job.cancelled = cancelled
            runner.submit(job)
            summary, usage = "".join(job).strip(), job.usage
    return {
        "id": new_id("resp_"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": kept + [items.compaction(summary)],
        "usage": usage_of(usage),
    }


def transcript(rest: list[dict]) -> str | None:
    """The items other than user messages as `role: text` lines, if they are all messages."""
    if any(item["type"] != "message" for item in rest):
        return None
    return "\n".join(f"{item['role']}: {items.text_of(item['content'])}" for item in rest)


def input_tokens(service: ResponseService, body: dict) -> dict:
    context, new_items = service.context(body)
    offered = tooling.offer(body).chat_tools
    with service.models.serving(body["model"]) as runner:
        job = prepare(runner, body.get("instructions"), context + new_items, {}, body.get("truncation") or "disabled", offered)
    return {"object": "response.input_tokens", "input_tokens": len(job.prompt_tokens)}
