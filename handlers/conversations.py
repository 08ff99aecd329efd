"""Conversations: HTTP translation for the conversation operations of the spec (see jan_server.storage.conversations)."""

from jan_server.handlers import services
from jan_server.responses.items import input_items
from jan_server.storage.paging import Page


def create_conversation(body=None):
    body = body or {}
    return services().store.conversations.create(body.get("metadata"), input_items(body.get("items") or [], "items"))


def get_conversation(conversation_id):
    return services().store.conversations.get(conversation_id)


def update_conversation(conversation_id, body):
    return services().store.conversations.modify(conversation_id, body["metadata"])


def delete_conversation(conversation_id):
    return services().store.conversations.delete(conversation_id)


def create_conversation_items(conversation_id, body):
    return services().store.conversations.add_items(conversation_id, input_items(body["items"], "items"))


def list_conversation_items(conversation_id, limit=20, order="desc", after=None, before=None):
    return services().store.conversations.list_items(conversation_id, Page(limit, order, after, before))


def get_conversation_item(conversation_id, item_id):
    return services().store.conversations.get_item(conversation_id, item_id)


def delete_conversation_item(conversation_id, item_id):
    return services().store.conversations.delete_item(conversation_id, item_id)
