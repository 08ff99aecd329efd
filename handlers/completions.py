"""Completions (OpenAI's legacy text completions). The 200 response has two media types, so the handler returns
explicit Flask responses."""

from flask import request

from jan_server.handlers import event_stream, json_response, services
from jan_server.web import completions
from jan_server.web.disconnect import disconnected


def create_completion(body):
    runner = services().models.runner_for(body["model"])
    jobs = completions.prepare(runner, body)
    gone = disconnected(request.environ)
    for job in jobs:
        job.cancelled = gone  # the scheduler stops the choices once their client is gone
    echoed = completions.echoes(runner, body, jobs)
    completions.submit(runner, jobs)
    n = len(jobs) // len(completions.prompts_of(body))
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return event_stream(completions.stream(jobs, echoed, body["model"], n, include_usage), cancel=lambda: completions.cancel(jobs))
    return json_response(completions.completion(jobs, echoed, body["model"], n))
