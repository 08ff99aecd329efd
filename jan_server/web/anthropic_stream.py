"""A Messages answer as Anthropic's Server-Sent Events, as its SDKs parse them: `message_start`, `ping`, each
content block's `content_block_start`, deltas (`text_delta`, `input_json_delta`) and `content_block_stop`, then
`message_delta` and `message_stop`; a `ping` whenever nothing else came for a while; an error after the stream
began is an `error` event."""

from __future__ import annotations

from typing import Iterator

from jan_server.errors import ApiError
from jan_server.models import tools
from jan_server.models.batching import Job
from jan_server.web import anthropic, anthropic_errors, sse

#: A `ping` after this many seconds without an event: Claude Code cancels and resends a request whose stream says
#: nothing for a while, as it may when a long prompt is read on a CPU.
PING_SECONDS = 10.0


def event(payload: dict) -> bytes:
    return sse.event(payload, payload["type"])


class Blocks:
    """The content blocks of a stream, from a ToolCallParser's events: text opens a text block once it holds more
    than whitespace (as a whole answer's content has no whitespace-only block), a call opens a tool_use block."""

    def __init__(self):
        self.index = -1
        self.open: str | None = None  # the type of the block under way
        self.pending = ""  # leading whitespace, held until text follows

    def add(self, piece: tuple) -> Iterator[bytes]:
        if piece[0] == "content":
            if self.open == "text":
                yield self.delta({"type": "text_delta", "text": piece[1]})
                return
            self.pending += piece[1]
            if self.pending.strip():
                yield from self.start(anthropic.text_block(""))
                yield self.delta({"type": "text_delta", "text": self.pending})
                self.pending = ""
        elif piece[0] == "call":
            _, _, call_id, name = piece
            call = tools.ToolCall(call_id, name, "")
            yield from self.start({"type": "tool_use", "id": anthropic.tool_use_id(call), "name": name, "input": {}})
        else:
            yield self.delta({"type": "input_json_delta", "partial_json": piece[2]})

    def start(self, block: dict) -> Iterator[bytes]:
        yield from self.close()
        self.index += 1
        self.open = block["type"]
        yield event({"type": "content_block_start", "index": self.index, "content_block": block})

    def delta(self, delta: dict) -> bytes:
        return event({"type": "content_block_delta", "index": self.index, "delta": delta})

    def close(self) -> Iterator[bytes]:
        if self.open is not None:
            yield event({"type": "content_block_stop", "index": self.index})
            self.open = None


def stream(job: Job, body: dict, plan: tools.ToolPlan | None) -> Iterator[bytes]:
    """The events of a submitted job's answer. A client that left ends it without a word (the job is cancelled).
    `message_start` counts the whole prompt as input (the scheduler may be seating the job meanwhile, so what it
    reuses is not known yet); `message_delta` carries the whole usage, with the prompt tokens reused from the cache.
    The events of one step go out as one write, as chat's one chunk does: each write crosses from the generator's
    thread to the server's event loop."""
    unseated = {"input_tokens": len(job.prompt_tokens), "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    head = {**anthropic.message(job, "", body, None), "stop_reason": None, "usage": unseated}
    yield event({"type": "message_start", "message": head}) + event({"type": "ping"})
    parser = tools.ToolCallParser() if plan else None
    blocks = Blocks()
    try:
        for text in job.deltas(idle=PING_SECONDS):
            if not text:
                yield event({"type": "ping"})
                continue
            written = b"".join(written for piece in (parser.feed(text) if parser else [("content", text)]) for written in blocks.add(piece))
            if written:
                yield written
    except ApiError as exc:
        yield event({"type": "error", "error": anthropic_errors.error_object(exc.status, exc.to_dict()["error"])[1]})
        return
    if job.finish_reason is None:  # cancelled: the client is gone
        return
    ending = [written for piece in (parser.close() if parser else []) for written in blocks.add(piece)]
    reason, sequence = anthropic.stop_reason(job, bool(parser and parser.calls), body)
    ending += [*blocks.close(), event({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": anthropic.usage(job)}),
               event({"type": "message_stop"})]
    yield b"".join(ending)
