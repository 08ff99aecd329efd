"""Embeddings."""

from jan_server.handlers import services
from jan_server.web import embeddings


def create_embedding(body):
    return embeddings.create(services().models.runner_for(body["model"]), body)
