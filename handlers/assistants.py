"""Assistants: HTTP translation for the assistant operations of the spec (see jan_server.storage.assistants)."""

from jan_server.handlers import services
from jan_server.storage.paging import Page


def list_assistants(limit=20, order="desc", after=None, before=None):
    return services().store.assistants.list(Page(limit, order, after, before))


def create_assistant(body):
    return services().store.assistants.create(body)


def get_assistant(assistant_id):
    return services().store.assistants.get(assistant_id)


def modify_assistant(assistant_id, body=None):
    return services().store.assistants.modify(assistant_id, body or {})


def delete_assistant(assistant_id):
    return services().store.assistants.delete(assistant_id)
