"""The official `openai` package, pointed at the real server, manages assistants, threads and messages."""

from __future__ import annotations

import openai
import pytest

from tests.live_server import PATIENT

# openai 3.x marks its Assistants API deprecated (in favour of Responses); Jan's API is built on it.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


@pytest.fixture()
def client(server) -> openai.OpenAI:
    with openai.OpenAI(api_key="x", base_url=server.api_url, max_retries=0, timeout=PATIENT) as client:
        yield client


def test_assistants(client):
    created = client.beta.assistants.create(model="smollm2-135m-instruct", name="Math Tutor", instructions="Be concise.", metadata={"team": "a"})
    assert created.id.startswith("asst_") and created.model == "smollm2-135m-instruct"
    assert client.beta.assistants.retrieve(created.id).name == "Math Tutor"
    updated = client.beta.assistants.update(created.id, name="Physics Tutor", temperature=0.5)
    assert (updated.name, updated.temperature, updated.instructions) == ("Physics Tutor", 0.5, "Be concise.")
    listed = client.beta.assistants.list(limit=100)
    assert created.id in [assistant.id for assistant in listed.data]
    deleted = client.beta.assistants.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(created.id)


def test_listing_assistants_pages_automatically(client):
    created = {client.beta.assistants.create(model="smollm2-135m-instruct", name=f"page-{n}").id for n in range(3)}
    seen = [assistant.id for assistant in client.beta.assistants.list(limit=1)]  # iterating follows after= cursors
    assert created <= set(seen) and len(seen) == len(set(seen))


def test_threads(client):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hello, what is AI?"}], metadata={"topic": "ai"})
    assert thread.id.startswith("thread_") and thread.metadata == {"topic": "ai"}
    assert client.beta.threads.retrieve(thread.id).id == thread.id
    updated = client.beta.threads.update(thread.id, metadata={"topic": "ml"})
    assert updated.metadata == {"topic": "ml"}
    deleted = client.beta.threads.delete(thread.id)
    assert deleted.deleted and deleted.id == thread.id
    with pytest.raises(openai.NotFoundError) as raised:
        client.beta.threads.retrieve(thread.id)
    assert raised.value.code == "thread_not_found"


def test_messages(client):
    thread = client.beta.threads.create()
    first = client.beta.threads.messages.create(thread.id, role="user", content="How does AI work?")
    second = client.beta.threads.messages.create(thread.id, role="assistant", content=[{"type": "text", "text": "With data."}])
    assert first.content[0].text.value == "How does AI work?" and second.role == "assistant"
    assert client.beta.threads.messages.retrieve(first.id, thread_id=thread.id).id == first.id
    listed = client.beta.threads.messages.list(thread.id, order="asc")
    assert [message.id for message in listed.data] == [first.id, second.id]
    updated = client.beta.threads.messages.update(first.id, thread_id=thread.id, metadata={"reviewed": "yes"})
    assert updated.metadata == {"reviewed": "yes"} and updated.content[0].text.value == "How does AI work?"
    deleted = client.beta.threads.messages.delete(second.id, thread_id=thread.id)
    assert deleted.deleted and deleted.id == second.id
    assert [message.id for message in client.beta.threads.messages.list(thread.id)] == [first.id]
    client.beta.threads.delete(thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.list(thread.id)


def test_validation_errors_reach_the_client_as_bad_requests(client):
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as raised:
        client.beta.threads.messages.create(thread.id, role="user", content="x", metadata={"k": "v" * 513})
    assert raised.value.param.startswith("metadata")
