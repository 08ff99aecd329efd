"""The official `openai` package, pointed at the real server, manages assistants, threads and messages."""

from __future__ import annotations

import openai
import pytest


# openai 3.x marks its Assistants API deprecated (in favour of Responses); Jan's API is built on it.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


def test_assistants(openai_client):
    created = openai_client.beta.assistants.create(model="smollm2-135m-instruct", name="Math Tutor", instructions="Be concise.", metadata={"team": "a"})
    assert created.id.startswith("asst_") and created.model == "smollm2-135m-instruct"
    assert openai_client.beta.assistants.retrieve(created.id).name == "Math Tutor"
    updated = openai_client.beta.assistants.update(created.id, name="Physics Tutor", temperature=0.5)
    assert (updated.name, updated.temperature, updated.instructions) == ("Physics Tutor", 0.5, "Be concise.")
    listed = openai_client.beta.assistants.list(limit=100)
    assert created.id in [assistant.id for assistant in listed.data]
    deleted = openai_client.beta.assistants.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        openai_client.beta.assistants.retrieve(created.id)


def test_listing_assistants_pages_automatically(openai_client):
    created = {openai_client.beta.assistants.create(model="smollm2-135m-instruct", name=f"page-{n}").id for n in range(3)}
    seen = [assistant.id for assistant in openai_client.beta.assistants.list(limit=1)]  # iterating follows after= cursors
    assert created <= set(seen) and len(seen) == len(set(seen))


def test_threads(openai_client):
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "Hello, what is AI?"}], metadata={"topic": "ai"})
    assert thread.id.startswith("thread_") and thread.metadata == {"topic": "ai"}
    assert openai_client.beta.threads.retrieve(thread.id).id == thread.id
    updated = openai_client.beta.threads.update(thread.id, metadata={"topic": "ml"})
    assert updated.metadata == {"topic": "ml"}
    deleted = openai_client.beta.threads.delete(thread.id)
    assert deleted.deleted and deleted.id == thread.id
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.beta.threads.retrieve(thread.id)
    assert raised.value.code == "thread_not_found"


def test_messages(openai_client):
    thread = openai_client.beta.threads.create()
    first = openai_client.beta.threads.messages.create(thread.id, role="user", content="How does AI work?")
    second = openai_client.beta.threads.messages.create(thread.id, role="assistant", content=[{"type": "text", "text": "With data."}])
    assert first.content[0].text.value == "How does AI work?" and second.role == "assistant"
    assert openai_client.beta.threads.messages.retrieve(first.id, thread_id=thread.id).id == first.id
    listed = openai_client.beta.threads.messages.list(thread.id, order="asc")
    assert [message.id for message in listed.data] == [first.id, second.id]
    updated = openai_client.beta.threads.messages.update(first.id, thread_id=thread.id, metadata={"reviewed": "yes"})
    assert updated.metadata == {"reviewed": "yes"} and updated.content[0].text.value == "How does AI work?"
    deleted = openai_client.beta.threads.messages.delete(second.id, thread_id=thread.id)
    assert deleted.deleted and deleted.id == second.id
    assert [message.id for message in openai_client.beta.threads.messages.list(thread.id)] == [first.id]
    openai_client.beta.threads.delete(thread.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.beta.threads.messages.list(thread.id)


def test_validation_errors_reach_the_client_as_bad_requests(openai_client):
    thread = openai_client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.beta.threads.messages.create(thread.id, role="user", content="x", metadata={"k": "v" * 513})
    assert raised.value.param.startswith("metadata")
