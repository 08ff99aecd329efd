"""Anthropic's Messages API (see jan_server.web.anthropic). The 200 of createAnthropicMessage has two media types,
so it returns explicit Flask responses."""

from flask import request

from jan_server.errors import InvalidRequestError
from jan_server.handlers import event_stream, json_response, services
from jan_server.web import anthropic, anthropic_remote, anthropic_stream
from jan_server.web.disconnect import disconnected


def create_anthropic_message(body):
    if upstream := services().models.remote_for(body["model"]):
        whole = anthropic_remote.answer(upstream, body)
        return event_stream(anthropic_remote.replay(whole)) if body.get("stream") else json_response(whole)
    asked = anthropic.request_of(body)
    with services().models.serving(body["model"]) as runner:
        job = runner.prepare(asked.messages, asked.parameters, asked.plan and asked.plan.tools)
        job.cancelled = disconnected(request.environ)  # the scheduler stops the job once its client is gone
        runner.submit(job)
    if body.get("stream"):
        return event_stream(anthropic_stream.stream(job, body, asked.plan), cancel=job.cancel)
    return json_response(anthropic.message(job, job.result(), body, asked.plan))


def count_anthropic_message_tokens(body):
    if services().models.remote_for(body["model"]):  # its tokenizer is the upstream's, which OpenAI's API does not offer
        raise InvalidRequestError(f"Model '{body['model']}' is remote: its upstream cannot count tokens.", param="model")
    asked = anthropic.request_of(body)
    with services().models.serving(body["model"]) as runner:
        return {"input_tokens": runner.count(asked.messages, asked.plan and asked.plan.tools)}
