"""Assistants: HTTP translation for the assistant operations of the spec (see jan_server.storage.store)."""

from jan_server.handlers import services
from jan_server.storage.paging import Page


def list_assistants(limit=20, order="desc", after=None, before=None):
    return services().store.list_assistants(Page(limit, order, after, before))


def create_assistant(body):
    return services().store.create_assistant(body)


def get_assistant(assistant_id):
    return services().store.get_assistant(assistant_id)


def modify_assistant(assistant_id, body=None):
    return services().store.modify_assistant(assistant_id, body or {})


def delete_assistant(assistant_id):
    return services().store.delete_assistant(assistant_id)
