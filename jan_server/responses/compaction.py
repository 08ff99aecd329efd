"""Compacting a context (POST /v1/responses/compact) and counting a request's prompt tokens
(POST /v1/responses/input_tokens), on the same model runners and prompts as a response.

A compacted context is its user messages, as they were, then one `compaction` item whose `encrypted_content` is the
model's own summary of the conversation (plain text: nothing is encrypted here). Given back as input, the item
reaches the model as a system message (jan_server.responses.items.chat_messages)."""

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


def compact(service: ResponseService, body: dict, cancelled: threading.Event | None = None) -> dict:
    context, new_items = service.context(body)
    conversation = context + new_items
    with service.models.serving(body["model"]) as runner:
        job = prepare(runner, body.get("instructions"), conversation + [items.message("user", SUMMARIZE)], {"max_tokens": SUMMARY_TOKENS}, "auto", [])
        if cancelled is not None:
            job.cancelled = cancelled
        runner.submit(job)
    summary = "".join(job).strip()
    kept = [item for item in conversation if item["type"] == "message" and item["role"] == "user"]
    return {
        "id": new_id("resp_"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": kept + [items.compaction(summary)],
        "usage": usage_of(job),
    }


def input_tokens(service: ResponseService, body: dict) -> dict:
    context, new_items = service.context(body)
    offered = tooling.offer(body).chat_tools
    with service.models.serving(body["model"]) as runner:
        job = prepare(runner, body.get("instructions"), context + new_items, {}, body.get("truncation") or "disabled", offered)
    return {"object": "response.input_tokens", "input_tokens": len(job.prompt_tokens)}
