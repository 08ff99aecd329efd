"""Chat completions. The 200 response has two media types, so the handler returns explicit Flask responses."""

from flask import request

from jan_server.models import jobs
from jan_server.web import chat
from jan_server.web.disconnect import disconnected
from jan_server.handlers import event_stream, json_response, services


def create_chat_completion(body):
    runner = services().models.runner_for(body["model"])
    job = runner.prepare(chat.messages_of(body), chat.parameters_of(body))
    job.cancelled = disconnected(request.environ)  # the scheduler stops the job once its client is gone
    choices = runner.submit_choices(job, body.get("n") or 1)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return event_stream(chat.stream(choices, body["model"], include_usage), cancel=job.cancel)
    return json_response(chat.completion(choices, jobs.results(choices), body["model"]))
