"""The Conversations API through the official `openai` package, a response that continues a conversation, and
chains and conversations that continue after a server restart."""

from __future__ import annotations

import openai
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.live_server import LiveServer, openai_at
from tests.openai_reference import assert_valid
from tests.test_responses import ENDLESS, create, wait_for


def test_conversation_objects_and_items(openai_client):
    raw = openai_client.conversations.with_raw_response.create(metadata={"topic": "demo"}, items=[{"role": "user", "content": "Hello! My name is Ada."}])
    assert_valid(raw.http_response.json(), "ConversationResource")
    conversation = raw.parse()
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "demo"}
    added = openai_client.conversations.items.with_raw_response.create(conversation.id, items=[
        {"type": "message", "role": "assistant", "content": "Hello Ada!"},
        {"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
    ])
    assert_valid(added.http_response.json(), "ConversationItemList")
    listed = openai_client.conversations.items.with_raw_response.list(conversation.id, order="asc")
    assert_valid(listed.http_response.json(), "ConversationItemList")
    items = listed.parse().data
    assert [(item.role, item.content[0].text) for item in items] == [
        ("user", "Hello! My name is Ada."), ("assistant", "Hello Ada!"), ("user", "What is my name?")]
    one = openai_client.conversations.items.with_raw_response.retrieve(items[1].id, conversation_id=conversation.id)
    assert_valid(one.http_response.json(), "ConversationItem")
    assert one.parse().id == items[1].id
    assert openai_client.conversations.update(conversation.id, metadata={"topic": "renamed"}).metadata == {"topic": "renamed"}
    assert openai_client.conversations.retrieve(conversation.id).metadata == {"topic": "renamed"}
    after_delete = openai_client.conversations.items.delete(items[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.conversations.items.retrieve(items[1].id, conversation_id=conversation.id)
    assert missing.value.body["code"] == "item_not_found"
    assert openai_client.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.conversations.retrieve(conversation.id)
    assert missing.value.body["code"] == "conversation_not_found"


IMAGE = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": "http://127.0.0.1/x.png"}]}]


def test_an_image_in_conversation_items_is_a_400_naming_it_and_nothing_is_added(openai_client):
    """As an image in a response's input is."""
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model=BUNDLED_MODEL_ID, input=IMAGE)
    assert (refused.value.body["param"], refused.value.body["code"]) == ("input[0].content[1]", "image_input_unsupported")
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.conversations.create(items=IMAGE)
    assert (refused.value.body["param"], refused.value.body["code"]) == ("items[0].content[1]", "image_input_unsupported")
    assert "read text only" in refused.value.body["message"]
    conversation = openai_client.conversations.create(items=[{"role": "user", "content": "Hello."}])
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "Look."}, *IMAGE])
    assert (refused.value.body["param"], refused.value.body["code"]) == ("items[1].content[1]", "image_input_unsupported")
    assert [item.content[0].text for item in openai_client.conversations.items.list(conversation.id).data] == ["Hello."]


def test_a_response_in_a_conversation_appends_its_input_and_output(openai_client):
    conversation = openai_client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    first = create(openai_client, input="What is my name?", conversation=conversation.id, max_output_tokens=16)
    assert first.conversation.id == conversation.id
    items = openai_client.conversations.items.list(conversation.id, order="asc").data
    assert [item.role for item in items] == ["user", "user", "assistant"]
    assert items[1].content[0].text == "What is my name?" and items[2].content[0].text == first.output_text
    assert items[2].id == first.output[0].id
    second = create(openai_client, input="Say it again.", conversation={"id": conversation.id}, max_output_tokens=16)
    assert second.usage.input_tokens > first.usage.input_tokens  # the conversation so far is the context
    assert len(openai_client.conversations.items.list(conversation.id).data) == 5


def test_chains_and_conversations_continue_after_a_restart(tmp_path):
    live = LiveServer(tmp_path / "data", args=("--n-threads", "1"))
    with live, openai_at(live.api_url) as openai_client:
        first = create(openai_client, input="Remember the word 'apple'.", max_output_tokens=12)
        conversation = openai_client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
        in_conversation = create(openai_client, input="Hello!", conversation=conversation.id, max_output_tokens=12)
    with live, openai_at(live.api_url) as openai_client:
        assert openai_client.responses.retrieve(first.id).output_text == first.output_text
        second = create(openai_client, input="Which word?", previous_response_id=first.id, max_output_tokens=12)
        assert second.usage.input_tokens > first.usage.input_tokens
        assert len(openai_client.conversations.items.list(conversation.id).data) == 3
        continued = create(openai_client, input="What is my name?", conversation=conversation.id, max_output_tokens=12)
        assert continued.usage.input_tokens > in_conversation.usage.input_tokens
        assert len(openai_client.conversations.items.list(conversation.id).data) == 5


def test_a_background_response_a_crash_interrupted_is_failed_after_the_restart(tmp_path):
    live = LiveServer(tmp_path / "data", args=("--n-threads", "1"))
    with live, openai_at(live.api_url) as openai_client:
        running = create(openai_client, input="List numbers.", text={"format": ENDLESS}, max_output_tokens=2000, background=True)
        wait_for(openai_client, running.id, {"in_progress"})
        live.kill()
        live.start()
        failed = wait_for(openai_client, running.id, {"failed"})  # once its heartbeat is stale
    assert failed.status == "failed" and "server stopped" in failed.error.message
