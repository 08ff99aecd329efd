"""Responses: HTTP translation for the response operations of the spec (see jan_server.responses.service).
The 200 of createResponse has two media types, so it returns explicit Flask responses."""

from flask import request

from jan_server.handlers import event_stream, json_response, services
from jan_server.responses import compaction
from jan_server.storage.paging import Page
from jan_server.web import responses
from jan_server.web.disconnect import disconnected


def create_response(body):
    service = services().responses
    if body.get("background"):
        return json_response(service.background(service.create(body)))
    generation = service.create(body, cancelled=disconnected(request.environ))
    if body.get("stream"):
        return event_stream(responses.stream(generation), cancel=generation.job.cancel)
    return json_response(service.run(generation))


def get_response(response_id):
    return services().responses.get(response_id)


def delete_response(response_id):
    return services().responses.delete(response_id)


def cancel_response(response_id):
    return services().responses.cancel(response_id)


def list_input_items(response_id, limit=20, order="desc", after=None, before=None):
    return services().store.responses.input_items(response_id, Page(limit, order, after, before))


def compact_response(body):
    return compaction.compact(services().responses, body, cancelled=disconnected(request.environ))


def count_response_input_tokens(body):
    return compaction.input_tokens(services().responses, body)
