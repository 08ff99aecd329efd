"""Models: HTTP translation for the model operations of the spec (see jan_server.models.lifecycle)."""

from flask import request

from jan_server.errors import ApiError
from jan_server.handlers import event_stream, json_response, services
from jan_server.web import sse
from jan_server.web.disconnect import disconnected


def list_models():
    return services().models.list()


def retrieve_model(model_id):
    return services().models.describe(model_id)


def delete_model(model_id):
    return services().models.delete(model_id)


def start_model(model_id, body=None):
    return services().models.start(model_id, body if isinstance(body, dict) else {})  # b"" when the body is left out


def stop_model(model_id):
    return services().models.stop(model_id)


def download_model(body):
    """Download a model, or add a remote one (a body with `engine`). The 200 response has two media types, so this
    returns explicit Flask responses."""
    if "engine" in body:
        return json_response(services().models.add_remote(body))
    model = services().models.download(body)
    if body.get("stream"):
        return event_stream(_events(services().models.progress(model["id"], disconnected(request.environ))))
    return json_response(model)


def _events(models):
    """Each model object as an SSE `data:` event; an error (the model was deleted meanwhile) as an `error` event."""
    try:
        for model in models:
            yield sse.event(model)
    except ApiError as exc:
        yield sse.event(exc.to_dict(), "error")
