"""Completions (OpenAI's legacy text completions). The 200 response has two media types, so the handler returns
explicit Flask responses."""

from flask import request

from jan_server.handlers import event_stream, forwarded, json_response, services
from jan_server.web import completions
from jan_server.web.disconnect import disconnected


def create_completion(body):
    if upstream := services().models.remote_for(body["model"]):
        return forwarded(upstream, "completions", body)
    with services().models.serving(body["model"]) as runner:
        echoed = completions.echoes(runner, body)
        groups = completions.start(runner, body, disconnected(request.environ))
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return event_stream(completions.stream(groups, echoed, body["model"], include_usage), cancel=lambda: completions.cancel(groups))
    return json_response(completions.completion(groups, echoed, body["model"]))
