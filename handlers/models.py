"""Models: list, retrieve, download, delete, start, stop."""

import time

from jan_server.web import sse
from jan_server.models.downloads import start_model_download
from jan_server.errors import ApiError
from jan_server.handlers import event_stream, json_response, services
from jan_server.models.registry import validate_model_id


def list_models():
    models = services().models
    return {"object": "list", "data": [models.describe(record) for record in services().registry.list()]}


def retrieve_model(model_id):
    models = services().models
    return models.describe(services().registry.get(validate_model_id(model_id)))


def delete_model(model_id):
    registry, models = services().registry, services().models
    registry.get(validate_model_id(model_id))
    services().downloads.cancel(model_id)  # stops a download and removes its partial file
    models.stop(model_id)
    registry.delete(model_id)
    models.forget(model_id)
    return {"id": model_id, "object": "model", "deleted": True}


def start_model(model_id, body=None):
    models = services().models
    overrides = body if isinstance(body, dict) else {}  # Connexion hands over b"" when the body is left out
    runner = models.start(validate_model_id(model_id), overrides)
    return models.describe(runner.record)


def stop_model(model_id):
    registry, models = services().registry, services().models
    record = registry.get(validate_model_id(model_id))
    models.stop(model_id)
    return models.describe(record)


def download_model(body):
    """The 200 response has two media types, so this returns explicit Flask responses."""
    registry, models, downloads = services().registry, services().models, services().downloads
    record = start_model_download(registry, downloads, body)
    if body.get("stream"):
        return event_stream(_progress_events(lambda: models.describe(registry.get(record.id))))
    return json_response(models.describe(record))


def _progress_events(describe, interval: float = 0.5):
    """The model object as an SSE `data:` event every interval until its download ends (or the model is deleted)."""
    while True:
        try:
            model = describe()
        except ApiError as exc:
            yield sse.event(exc.to_dict(), "error")
            return
        yield sse.event(model)
        if model["state"] != "downloading":
            return
        time.sleep(interval)
