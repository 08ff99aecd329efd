"""The Responses API's stream: a generation (jan_server.responses.generation) as OpenAI's typed Server-Sent
Events, each with its `sequence_number`: response.created, response.in_progress, then per output item
response.output_item.added, its content (a message: response.content_part.added, response.output_text.delta...,
response.output_text.annotation.added for each citation, response.output_text.done, response.content_part.done; a function call: response.function_call_arguments.delta...,
response.function_call_arguments.done; a custom tool's call: response.custom_tool_call_input.delta...,
response.custom_tool_call_input.done; a file search: response.file_search_call.in_progress, .searching, .completed)
and response.output_item.done, then response.completed (or
response.incomplete at max_output_tokens, or response.failed with the error). A client that leaves stops the
generation, which is stored as cancelled. `events` yields the same events as dicts, for the WebSocket mode
(jan_server.web.responses_socket)."""

from __future__ import annotations

import contextlib
import itertools
from typing import Iterator

from jan_server.errors import ApiError
from jan_server.responses.file_search import KIND as SEARCH
from jan_server.responses.generation import Generation
from jan_server.responses.items import output_text
from jan_server.web import sse

#: The closing event of a response by its final status.
FINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
MESSAGE = "message"  # in `opened`, beside the indexes of function calls


def stream(generation: Generation) -> Iterator[bytes]:
    with contextlib.closing(events(generation)) as each:  # closed at once when the client leaves
        for event in each:
            yield sse.event(event, event["type"])


def events(generation: Generation) -> Iterator[dict]:
    numbers = itertools.count()

    def event(kind: str, **fields) -> dict:
        return {"type": kind, "sequence_number": next(numbers), **fields}

    def added(entry) -> Iterator[dict]:
        opened.append(entry)
        at = len(opened) - 1
        if entry == MESSAGE:
            yield event("response.output_item.added", output_index=at, item={**generation.message("in_progress"), "content": []})
            yield event("response.content_part.added", item_id=generation.message_id, output_index=at, content_index=0, part=output_text(""))
        else:
            item = generation.call(entry)
            yield event("response.output_item.added", output_index=at, item=item)
            if item["type"] == SEARCH:
                yield event("response.file_search_call.in_progress", item_id=item["id"], output_index=at)

    def done(at: int, item: dict) -> Iterator[dict]:
        closed.add(at)
        if item["type"] == SEARCH:
            pass
        elif item["type"] == "message":
            where = {"item_id": item["id"], "output_index": at, "content_index": 0}
            for number, annotation in enumerate(item["content"][0]["annotations"]):  # a file search's citations
                yield event("response.output_text.annotation.added", **where, annotation_index=number, annotation=annotation)
            yield event("response.output_text.done", **where, text=item["content"][0]["text"], logprobs=[])
            yield event("response.content_part.done", **where, part=item["content"][0])
        elif item["type"] == "custom_tool_call":
            yield event("response.custom_tool_call_input.done", item_id=item["id"], output_index=at, input=item["input"])
        else:
            yield event("response.function_call_arguments.done", item_id=item["id"], name=item["name"], output_index=at, arguments=item["arguments"])
        yield event("response.output_item.done", output_index=at, item=item)

    opened: list = []  # the output items streamed so far, MESSAGE or call indexes, in output order
    closed: set[int] = set()  # the positions in `opened` whose output_item.done was sent
    yield event("response.created", response=generation.response)
    yield event("response.in_progress", response=generation.response)
    try:
        for kind, *args in generation.outputs():
            if kind == "text":
                if MESSAGE not in opened:
                    if not generation.text.strip():
                        continue  # blank text before a call is no message; sent with the next text otherwise
                    yield from added(MESSAGE)
                    args = [generation.text]
                yield event("response.output_text.delta", item_id=generation.message_id, output_index=opened.index(MESSAGE), content_index=0, delta=args[0], logprobs=[])
            elif kind == "call":
                searching = generation.calls[args[0]]["type"] == SEARCH  # the message goes on after a search
                if opened and len(opened) - 1 not in closed and not (searching and opened[-1] == MESSAGE):
                    before = opened[-1]  # complete: text only comes before the calls, one call after another
                    yield from done(len(opened) - 1, generation.message("completed") if before == MESSAGE else generation.call(before))
                yield from added(args[0])
            elif kind == "searching":
                yield event("response.file_search_call.searching", item_id=generation.calls[args[0]]["id"], output_index=opened.index(args[0]))
            elif kind == "searched":
                at = opened.index(args[0])
                yield event("response.file_search_call.completed", item_id=generation.calls[args[0]]["id"], output_index=at)
                yield from done(at, generation.call(args[0]))
            else:
                index, fragment = args
                call = generation.calls[index]
                kind = "response.custom_tool_call_input.delta" if call["type"] == "custom_tool_call" else "response.function_call_arguments.delta"
                yield event(kind, item_id=call["id"], output_index=opened.index(index), delta=fragment)
    except ApiError as exc:
        yield event(FINAL_EVENT["failed"], response=generation.fail(exc))
        return
    except GeneratorExit:  # the client left: stop generating and store what there is
        generation.job.cancel()
        with contextlib.suppress(ApiError):  # stored failed, and no one to tell
            generation.finish()
        raise
    try:
        response = generation.finish()
    except ApiError:  # stored failed
        yield event(FINAL_EVENT["failed"], response=generation.response)
        return
    if response["status"] == "cancelled":
        return
    output = response["output"]
    if MESSAGE not in opened and any(item["type"] == "message" for item in output):  # an empty message: not streamed yet
        yield from added(MESSAGE)
    for at in range(len(opened)):
        if at not in closed:
            yield from done(at, output[at])
    yield event(FINAL_EVENT[response["status"]], response=response)
