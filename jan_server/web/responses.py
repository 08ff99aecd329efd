"""The Responses API's stream: a generation (jan_server.responses.generation) as OpenAI's typed Server-Sent
Events, each with its `sequence_number`: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed (or response.incomplete at
max_output_tokens, or response.failed with the error). A client that leaves stops the generation, which is
stored as cancelled."""

from __future__ import annotations

import itertools
from typing import Iterator

from jan_server.errors import ApiError
from jan_server.responses.generation import Generation
from jan_server.responses.items import output_text
from jan_server.web import sse

#: The closing event of a response by its final status.
FINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def stream(generation: Generation) -> Iterator[bytes]:
    numbers = itertools.count()

    def event(kind: str, **fields) -> bytes:
        return sse.event({"type": kind, "sequence_number": next(numbers), **fields}, kind)

    where = {"item_id": generation.message_id, "output_index": 0}
    yield event("response.created", response=generation.response)
    yield event("response.in_progress", response=generation.response)
    yield event("response.output_item.added", output_index=0, item={**generation.message("in_progress"), "content": []})
    yield event("response.content_part.added", **where, content_index=0, part=output_text(""))
    try:
        for delta in generation.texts():
            yield event("response.output_text.delta", **where, content_index=0, delta=delta, logprobs=[])
    except ApiError as exc:
        yield event(FINAL_EVENT["failed"], response=generation.fail(exc))
        return
    except GeneratorExit:  # the client left: stop generating and store what there is
        generation.job.cancel()
        generation.finish()
        raise
    response = generation.finish()
    if response["status"] == "cancelled":
        return
    message = response["output"][0]
    yield event("response.output_text.done", **where, content_index=0, text=generation.text, logprobs=[])
    yield event("response.content_part.done", **where, content_index=0, part=message["content"][0])
    yield event("response.output_item.done", output_index=0, item=message)
    yield event(FINAL_EVENT[response["status"]], response=response)
