"""Chat completions. The 200 response has two media types, so the handler returns explicit Flask responses."""

from flask import request

from jan_server.models import jobs
from jan_server.web import chat, chat_stream
from jan_server.web.disconnect import disconnected
from jan_server.handlers import event_stream, forwarded, json_response, services


def create_chat_completion(body):
    if upstream := services().models.remote_for(body["model"]):
        return forwarded(upstream, "chat/completions", body)
    asked = chat.request_of(body)
    with services().models.serving(body["model"]) as runner:
        job = runner.prepare(asked.messages, asked.parameters, asked.plan and asked.plan.tools)
        job.cancelled = disconnected(request.environ)  # the scheduler stops the job once its client is gone
        choices = runner.submit_choices(job, body.get("n") or 1)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return event_stream(chat_stream.stream(choices, body["model"], include_usage, asked.plan), cancel=job.cancel)
    return json_response(chat.completion(choices, jobs.results(choices), body["model"], asked.plan))
