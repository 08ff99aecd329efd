"""The file_search tool of the Responses API against the real server and the bundled model, through the `openai`
package: a search the server runs itself, its `file_search_call` item (results with `include`), the streamed events,
the message's `file_citation` of the file holding the fact, bad input, the item given back as input, and the same
after a restart."""

from __future__ import annotations

import time

import openai
import pytest

from tests.live_server import LiveServer, openai_at
from tests.openai_reference import assert_valid
from tests.test_responses import published
from tests.test_vector_stores import settled

MODEL = "smollm2-135m-instruct"
DOCUMENTS = {
    "bakery.txt": "The Zorbel bakery opens at 7 in the morning and sells rye bread.",
    "harbour.txt": "The harbour of Quillon has 42 fishing boats and a red lighthouse.",
    "library.txt": "The Mirrow library lends books for three weeks; late returns cost one coin a day.",
    "garden.txt": "The Tessaly garden grows blue tulips every April.",
}
QUESTION = "How many fishing boats does the harbour of Quillon have?"


def town(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    """A store of the documents, ingested: its id and the file ids by name."""
    files = {name: client.files.create(file=(name, text.encode()), purpose="assistants").id for name, text in DOCUMENTS.items()}
    store = client.vector_stores.create(name="town", file_ids=list(files.values()))
    assert settled(client, store.id).file_counts.completed == len(files)
    return store.id, files


def ask(client: openai.OpenAI, store_id: str, tool: dict | None = None, choice="required", **extra):
    tool = tool or {"type": "file_search", "vector_store_ids": [store_id]}
    return client.responses.create(model=MODEL, input=QUESTION, tools=[tool], tool_choice=choice, max_output_tokens=96, temperature=0, **extra)


def assert_searched_and_cited(response, harbour: str, results: bool) -> None:
    assert_valid(response.model_dump(exclude_unset=True), "Response")
    call, message = response.output
    assert (call.type, call.status, call.queries[0]) == ("file_search_call", "completed", QUESTION)
    if results:
        assert call.results[0].file_id == harbour and call.results[0].filename == "harbour.txt" and "42 fishing boats" in call.results[0].text
    else:
        assert call.results is None
    citation = message.content[0].annotations[0]
    assert (citation.type, citation.file_id, citation.filename, citation.index) == ("file_citation", harbour, "harbour.txt", len(message.content[0].text))


def test_a_required_search_runs_on_the_server_and_the_answer_cites_the_file_holding_the_fact(openai_client):
    store_id, files = town(openai_client)
    response = ask(openai_client, store_id, include=["file_search_call.results"])
    assert response.status == "completed" and response.output_text
    assert_searched_and_cited(response, files["harbour.txt"], results=True)
    assert response.tools[0].type == "file_search" and response.usage.input_tokens > 0
    assert_searched_and_cited(openai_client.responses.retrieve(response.id), files["harbour.txt"], results=True)

    plain = ask(openai_client, store_id, choice={"type": "file_search"})
    assert_searched_and_cited(plain, files["harbour.txt"], results=False)

    # the chain, with its file_search_call, is the next response's context; the item is taken back as input too
    follow = openai_client.responses.create(model=MODEL, previous_response_id=response.id, input="Thanks.", max_output_tokens=8)
    assert follow.status in ("completed", "incomplete")
    given = [{"role": "user", "content": QUESTION}, response.output[0].model_dump(exclude_unset=True), {"role": "user", "content": "Thanks."}]
    again = openai_client.responses.create(model=MODEL, input=given, max_output_tokens=8)
    kept = list(openai_client.responses.input_items.list(again.id, order="asc"))
    assert kept[1].type == "file_search_call" and kept[1].queries == response.output[0].queries


def test_a_streamed_search_sends_openais_events_in_order(openai_client):
    store_id, files = town(openai_client)
    events = list(ask(openai_client, store_id, stream=True))
    for event in events:
        assert_valid(published(event.model_dump(exclude_unset=True)), "ResponseStreamEvent")
    kinds = [event.type for event in events]
    search = ["response.output_item.added", "response.file_search_call.in_progress", "response.file_search_call.searching",
              "response.file_search_call.completed", "response.output_item.done"]
    assert kinds[:7] == ["response.created", "response.in_progress", *search]
    assert kinds[7:9] == ["response.output_item.added", "response.content_part.added"] and kinds[-1] == "response.completed"
    assert [event.output_index for event in events[2:7]] == [0] * 5 and events[7].output_index == 1
    assert {event.output_index for event in events if event.type == "response.output_text.delta"} == {1}
    cited = [event for event in events if event.type == "response.output_text.annotation.added"]
    assert [(event.output_index, event.annotation_index, event.annotation.file_id) for event in cited] == [(1, 0, files["harbour.txt"])]
    assert kinds.index("response.output_text.annotation.added") == kinds.index("response.output_text.done") - 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert_searched_and_cited(events[-1].response, files["harbour.txt"], results=False)


def test_a_search_in_the_background_appends_to_its_conversation(openai_client):
    store_id, files = town(openai_client)
    conversation = openai_client.conversations.create()
    response = ask(openai_client, store_id, background=True, conversation=conversation.id)
    deadline = time.monotonic() + 300  # a bound for a hang, not a speed requirement
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = openai_client.responses.retrieve(response.id)
    assert_searched_and_cited(response, files["harbour.txt"], results=False)
    kept = list(openai_client.conversations.items.list(conversation.id, order="asc"))
    assert [item.type for item in kept] == ["message", "file_search_call", "message"] and kept[1].queries[0] == QUESTION
    given = response.output[0].model_dump(exclude_unset=True)  # its id taken already: a given item gets a new one
    added = openai_client.conversations.items.create(conversation.id, items=[given, given])
    assert [item.type for item in added.data] == ["file_search_call"] * 2 and len({item.id for item in added.data} | {given["id"]}) == 3
    follow = openai_client.responses.create(model=MODEL, conversation=conversation.id, input="Thanks.", max_output_tokens=8)
    assert follow.status in ("completed", "incomplete")


def test_bad_file_search_tools_are_refused_naming_the_field(openai_client):
    store_id, _ = town(openai_client)
    with pytest.raises(openai.NotFoundError) as missing:
        ask(openai_client, "vs_missing")
    assert missing.value.body["param"] == "tools.vector_store_ids[0]"
    with pytest.raises(openai.BadRequestError) as bad_filter:
        ask(openai_client, store_id, {"type": "file_search", "vector_store_ids": [store_id], "filters": {"type": "near", "key": "a", "value": 1}})
    assert "filters" in str(bad_filter.value.body)
    with pytest.raises(openai.BadRequestError) as unforced:
        openai_client.responses.create(model=MODEL, input=QUESTION, tool_choice={"type": "file_search"}, max_output_tokens=8)
    assert unforced.value.body["param"] == "tool_choice"


def test_a_search_after_a_restart(tmp_path):
    with LiveServer(tmp_path / "data") as server, openai_at(server.api_url) as client:
        store_id, files = town(client)
        first = ask(client, store_id)
    with LiveServer(tmp_path / "data") as server, openai_at(server.api_url) as client:
        assert_searched_and_cited(client.responses.retrieve(first.id), files["harbour.txt"], results=False)
        assert_searched_and_cited(ask(client, store_id, include=["file_search_call.results"]), files["harbour.txt"], results=True)
