"""Models: list, retrieve, delete, start, stop (downloadModel arrives with the downloader)."""

from jan_server.errors import ApiError
from jan_server.handlers import services
from jan_server.registry import validate_model_id


def list_models():
    models = services().models
    return {"object": "list", "data": [models.describe(record) for record in services().registry.list()]}


def retrieve_model(model_id):
    models = services().models
    return models.describe(services().registry.get(validate_model_id(model_id)))


def delete_model(model_id):
    registry, models = services().registry, services().models
    registry.get(validate_model_id(model_id))
    models.stop(model_id)
    registry.delete(model_id)
    models.forget(model_id)
    return {"id": model_id, "object": "model", "deleted": True}


def start_model(model_id, body=None):
    models = services().models
    runner = models.start(validate_model_id(model_id), body or {})
    return models.describe(runner.record)


def stop_model(model_id):
    registry, models = services().registry, services().models
    record = registry.get(validate_model_id(model_id))
    models.stop(model_id)
    return models.describe(record)


class NotImplementedYet(ApiError):
    status = 501
    type = "server_error"


def download_model(body):
    raise NotImplementedYet("Model downloads are not available yet.", code="not_implemented")
