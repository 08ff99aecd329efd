"""Chat completions. The 200 response has two media types, so the handler returns explicit Flask responses."""

import json

from flask import Response, request

from jan_server import chat
from jan_server.disconnect import disconnected
from jan_server.handlers import services


def create_chat_completion(body):
    runner = services().models.runner_for(body["model"])
    job = runner.prepare(chat.messages_of(body), chat.parameters_of(body))
    job.cancelled = disconnected(request.environ)
    runner.submit(job)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(
            _closing(chat.stream(job, body["model"], include_usage), job),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text = job.result()
    return Response(json.dumps(chat.completion(job, text, body["model"])), mimetype="application/json")


def _closing(chunks, job):
    """Cancel the generation when the server stops sending the stream, whatever the reason."""
    try:
        yield from chunks
    finally:
        job.cancel()
