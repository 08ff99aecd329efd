"""Messages: HTTP translation for the message operations of the spec (see jan_server.storage.messages)."""

from jan_server.handlers import services
from jan_server.storage.paging import Page


def list_messages(thread_id, limit=20, order="desc", after=None, before=None, run_id=None):
    """`run_id` is accepted for OpenAI clients and ignored: this server has no runs."""
    return services().store.messages.list(thread_id, Page(limit, order, after, before))


def create_message(thread_id, body):
    return services().store.messages.create(thread_id, body)


def retrieve_message(thread_id, message_id):
    return services().store.messages.get(thread_id, message_id)


def modify_message(thread_id, message_id, body=None):
    return services().store.messages.modify(thread_id, message_id, (body or {}).get("metadata"))


def delete_message(thread_id, message_id):
    return services().store.messages.delete(thread_id, message_id)


def list_message_files(thread_id, message_id):
    return services().store.messages.files(thread_id, message_id)


def retrieve_message_file(thread_id, message_id, file_id):
    return services().store.messages.file(thread_id, message_id, file_id)
