"""A prompt longer than the model's context, on every API, whole or streamed: the API's own 400 before anything
is generated (OpenAI's `context_length_exceeded`, Anthropic's `invalid_request_error` saying `prompt is too
long`), never a 500, a started stream or a hang."""

from __future__ import annotations

import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID

MODEL = BUNDLED_MODEL_ID
LONG = "word " * 10000  # more than the bundled model's context (8,192 tokens, its trained context)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path, body, param", [
    ("/chat/completions", {"messages": [{"role": "user", "content": LONG}], "max_tokens": 4}, "messages"),
    ("/completions", {"prompt": LONG, "max_tokens": 4}, "prompt"),
    ("/responses", {"input": LONG, "max_output_tokens": 16}, "input"),
])
def test_openai_routes_answer_context_length_exceeded(api, path, body, param, stream):
    response = api.post(path, json={"model": MODEL, **body, "stream": stream})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json", response.text
    assert response.json()["error"] | {"message": None} == {"message": None, "type": "invalid_request_error", "param": param, "code": "context_length_exceeded"}


@pytest.mark.parametrize("extra", [{}, {"stream": True}])
def test_anthropic_messages_answer_prompt_too_long(api, extra):
    """(count_tokens counts such a prompt: tests/test_anthropic.py.)"""
    response = api.post("/messages", json={"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": LONG}], **extra})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json", response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("prompt is too long: ")
