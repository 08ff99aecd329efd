"""Embeddings."""

from jan_server.handlers import forwarded, services
from jan_server.web import embeddings


def create_embedding(body):
    if upstream := services().models.remote_for(body["model"]):
        return forwarded(upstream, "embeddings", body)
    with services().models.serving(body["model"]) as runner:  # not stopped to make room while it embeds
        return embeddings.create(runner, body)
