"""Threads: HTTP translation for the thread operations of the spec (see jan_server.storage.threads)."""

from jan_server.handlers import services
from jan_server.storage.paging import Page


def create_thread(body=None):
    body = body or {}
    return services().store.threads.create(
        messages=body.get("messages") or (),
        metadata=body.get("metadata"),
        title=body.get("title"),
        tool_resources=body.get("tool_resources"),
        assistants=body.get("assistants") or (),
    )


def list_threads(limit=20, order="desc", after=None, before=None):
    return services().store.threads.list(Page(limit, order, after, before))


def get_thread(thread_id):
    return services().store.threads.get(thread_id)


def modify_thread(thread_id, body=None):
    body = body or {}
    return services().store.threads.modify(
        thread_id,
        metadata=body.get("metadata"),
        title=body.get("title"),
        messages=body.get("messages") or (),
        tool_resources=body.get("tool_resources"),
        assistants=body.get("assistants"),
    )


def delete_thread(thread_id):
    return services().store.threads.delete(thread_id)


def get_thread_assistants(thread_id):
    return services().store.threads.assistants(thread_id)


def post_thread_assistants(thread_id, assistants_id, body=None):
    return services().store.threads.attach(thread_id, assistants_id, body)


def list_thread_message(thread_id):
    return services().store.threads.with_messages(thread_id)
