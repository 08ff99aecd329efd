"""Chat completions on the real SmolLM2 model, through the official `openai` package and raw HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import httpx
import openai
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights
from tests.live_server import LiveServer
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error


MODEL = BUNDLED_MODEL_ID
HELLO = [{"role": "user", "content": "What is the capital of France?"}]
#: A grammar that cannot end before 120 numbers: a generation that is surely still running when we leave.
ENDLESS = {"type": "json_schema", "json_schema": {"name": "numbers", "schema": {
    "type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 120}},
    "required": ["numbers"]}}}


@pytest.fixture()
def client(server) -> openai.OpenAI:
    with openai.OpenAI(api_key="x", base_url=server.api_url, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer():
    """The model's own tokenizer, loaded directly with llama_cpp (vocabulary only)."""
    import llama_cpp

    llama = llama_cpp.Llama(str(bundled_weights()), vocab_only=True, verbose=False)
    yield llama
    llama.close()


def model_metadata(api) -> dict:
    return api.get(f"/models/{MODEL}").json()["metadata"]


def test_non_streaming(client):
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL and isinstance(completion.created, int)
    choice = completion.choices[0]
    assert (choice.index, choice.message.role, choice.message.refusal, choice.logprobs) == (0, "assistant", None, None)
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and 0 < usage.completion_tokens <= 24


def test_streaming_matches_non_streaming(client):
    request = dict(model=MODEL, messages=HELLO, max_tokens=24, temperature=0)
    expected = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "chat.completion.chunk" and chunk.id == chunks[0].id for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *content, finish, usage = chunks
    text = "".join(chunk.choices[0].delta.content or "" for chunk in content)
    assert text == expected.choices[0].message.content
    assert len(content) > 2  # streamed token by token, not in one piece
    assert finish.choices[0].finish_reason == expected.choices[0].finish_reason and not finish.choices[0].delta.content
    assert usage.choices == [] and usage.usage == expected.usage


def test_stream_wire_format(api):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True}
    with api.stream("POST", "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in payload for payload in payloads)  # only with stream_options.include_usage


def test_stop_sequence(client):
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0).choices[0].message.content
    words = full.split()
    assert len(words) > 3, full
    stop = " " + words[2]
    cut = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stop=[stop, "zzzz"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]
    streamed = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stop=stop, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == full[: full.index(stop)]


def test_max_tokens_gives_length(client):
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}], **limit)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens == 5


def test_same_seed_same_text(client):
    request = dict(model=MODEL, messages=[{"role": "user", "content": "Write a short poem about the sea."}], max_tokens=32, temperature=0.7)
    first = client.chat.completions.create(**request, seed=1234).choices[0].message.content
    client.chat.completions.create(**request, seed=99)  # something else in between
    assert client.chat.completions.create(**request, seed=1234).choices[0].message.content == first


POEM = dict(model=MODEL, messages=[{"role": "user", "content": "Write a short poem about the sea."}], max_tokens=16, temperature=0.9)


def test_n_choices_each_as_its_own_seed_alone(client, api):
    """n=3 with seed 40: choice i is what seed 40 + i gives alone; usage counts the prompt once, every choice."""
    response = api.post("/chat/completions", json={**POEM, "n": 3, "seed": 40})
    assert_valid(response.json(), "CreateChatCompletionResponse")
    completion = openai.types.chat.ChatCompletion.model_validate(response.json())
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    alone = [client.chat.completions.create(**POEM, seed=40 + index) for index in range(3)]
    assert [choice.message.content for choice in completion.choices] == [one.choices[0].message.content for one in alone]
    assert [choice.finish_reason for choice in completion.choices] == [one.choices[0].finish_reason for one in alone]
    assert len({choice.message.content for choice in completion.choices}) > 1
    usage = completion.usage
    assert usage.prompt_tokens == alone[0].usage.prompt_tokens
    assert usage.completion_tokens == sum(one.usage.completion_tokens for one in alone)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    again = client.chat.completions.create(**POEM, n=3, seed=40)
    assert [choice.message.content for choice in again.choices] == [choice.message.content for choice in completion.choices]


def test_streamed_n_choices_carry_their_index(client, api):
    expected = client.chat.completions.create(**POEM, n=3, seed=41)
    body = {**POEM, "n": 3, "seed": 41, "stream": True, "stream_options": {"include_usage": True}}
    with api.stream("POST", "/chat/completions", json=body) as response:
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    for payload in payloads:
        assert_valid(payload, "CreateChatCompletionStreamResponse")
    *chunks, usage = [openai.types.chat.ChatCompletionChunk.model_validate(payload) for payload in payloads]
    assert [chunk.choices[0].delta.role for chunk in chunks[:3]] == ["assistant"] * 3
    texts, finishes = ["", "", ""], {}
    for chunk in chunks:
        (choice,) = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            assert choice.index not in finishes  # once per choice, and nothing after it
            finishes[choice.index] = choice.finish_reason
        assert choice.index not in finishes or choice.finish_reason
    assert texts == [choice.message.content for choice in expected.choices]
    assert finishes == {choice.index: choice.finish_reason for choice in expected.choices}
    assert usage.choices == [] and usage.usage == expected.usage


def test_json_object_parses(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Return a JSON object naming one fruit."}], max_tokens=120, temperature=0,
        response_format={"type": "json_object"},
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_json_schema_is_followed(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city", "population"]}
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give the capital of France and its population."}], max_tokens=60,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    value = json.loads(completion.choices[0].message.content)
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


def test_usage_counts_match_the_tokenizer(client, tokenizer):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    completion = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    # SmolLM2's chat template (ChatML), written out by hand
    prompt = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert completion.usage.prompt_tokens == len(tokenizer.tokenize(prompt.encode(), add_bos=False, special=True))
    text = completion.choices[0].message.content
    assert completion.usage.completion_tokens == len(tokenizer.tokenize(text.encode(), add_bos=False))


def test_request_errors(client, api):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.code == "model_not_found"
    assert assert_openai_error(api.post("/chat/completions", json={"model": "../etc", "messages": HELLO}), 400)["param"] == "model"  # the one model-id rule
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model=MODEL, messages=HELLO, n=9)  # the model runs 8 sequences at once
    assert (too_many.value.param, too_many.value.code) == ("n", "invalid_value")
    for bad in ({"temperature": 3}, {"max_tokens": 0}, {"top_p": 1.5}, {"stop": ["a", "b", "c", "d", "e"]},
                {"response_format": {"type": "xml"}}, {"messages": [{"role": "robot", "content": "hi"}]}):
        assert_openai_error(api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, **bad}), 400)


def test_prompt_longer_than_the_context(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello " * 9000}], max_tokens=4)
    assert error.value.code == "context_length_exceeded"


def test_eight_concurrent_streams_complete_while_crud_answers(server, client):
    results: dict[int, str] = {}
    finished = threading.Event()
    generating = threading.Event()

    def stream(n):
        text = ""
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count from {n} to {n + 20}."}], max_tokens=24, temperature=0, stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                generating.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                results[n] = (text, chunk.choices[0].finish_reason)
        if len(results) == 8:
            finished.set()

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    assert generating.wait(120)
    health = httpx.get(f"{server.base_url}/health", timeout=60)
    models = httpx.get(f"{server.api_url}/models", timeout=60)
    answered_while_generating = not finished.is_set()
    for thread in threads:
        thread.join(120)
    assert health.status_code == 200 and models.status_code == 200
    assert answered_while_generating
    assert sorted(results) == list(range(8))
    for n, (text, finish) in results.items():
        expected = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count from {n} to {n + 20}."}], max_tokens=24, temperature=0,
        ).choices[0]
        assert (text, finish) == (expected.message.content, expected.finish_reason)  # whole, not cut off


def test_disconnect_mid_stream_frees_the_model(api):
    request = {"model": MODEL, "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 1000, "response_format": ENDLESS}
    api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 1})  # the model is running
    before = model_metadata(api)
    with api.stream("POST", "/chat/completions", json={**request, "stream": True}) as response:
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events == 4:
                break  # leave: closing the response drops the connection
    nxt = api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 5})
    assert nxt.status_code == 200 and nxt.json()["usage"]["completion_tokens"] == 5
    after = model_metadata(api)
    assert after["cancelled_requests"] == before["cancelled_requests"] + 1
    abandoned = after["generated_tokens"] - before["generated_tokens"] - 5
    assert abandoned < 100  # the grammar needs 240+ tokens: generation stopped early


def test_disconnect_while_waiting_for_a_non_streaming_answer(server, api):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 1000, "response_format": ENDLESS}
    api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 1})  # the model is running
    before = model_metadata(api)
    with httpx.Client(base_url=server.api_url, timeout=httpx.Timeout(60, read=1.0)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/chat/completions", json=body)
    nxt = api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 5})
    assert nxt.status_code == 200
    after = model_metadata(api)
    assert after["cancelled_requests"] == before["cancelled_requests"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] - 5 < 240


def test_full_queue_answers_429_with_retry_after(tmp_path):
    server = LiveServer(tmp_path / "data", args=("--max-queued-requests", "1")).start()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 1000,
            "response_format": ENDLESS, "stream": True}
    try:
        with httpx.Client(base_url=server.api_url, timeout=60) as api:
            api.put(f"/models/{MODEL}/start", json={"n_parallel": 1}).raise_for_status()  # one slot: the next one waits
            with api.stream("POST", "/chat/completions", json=body) as running:
                running_lines = running.iter_lines()  # kept: dropping a half-read iterator closes the connection
                next(running_lines)
                with api.stream("POST", "/chat/completions", json=body) as waiting:
                    waiting_lines = waiting.iter_lines()
                    next(waiting_lines)  # queued: the one place in the queue is taken
                    refused = api.post("/chat/completions", json={**body, "stream": False})
                    assert assert_openai_error(refused, 429)["type"] == "rate_limit_error"
                    assert int(refused.headers["retry-after"]) >= 1
            # both clients left: their places free up, as a client honouring Retry-After sees
            for _attempt in range(10):
                reply = api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 3})
                if reply.status_code != 429:
                    break
                time.sleep(int(reply.headers["retry-after"]))
            assert reply.status_code == 200, reply.text
            assert api.get(f"/models/{MODEL}").json()["metadata"]["cancelled_requests"] == 2
    finally:
        server.stop()


def test_the_store_answers_while_streams_hold_the_worker_threads(api):
    """Twelve open streams, more than Connexion's own bridge has threads: threads and messages are still served
    while every stream is open and none has finished (each needs 240+ tokens)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 1000,
            "response_format": ENDLESS, "stream": True}
    api.post("/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 1})  # the model is running
    before = model_metadata(api)
    completed, cancelled = before["completed_requests"], before["cancelled_requests"]
    with contextlib.ExitStack() as streams:  # leaving it drops every connection, which cancels the generations
        events = []  # each stream's lines, kept: a dropped iterator would close its stream
        for _ in range(12):
            response = streams.enter_context(api.stream("POST", "/chat/completions", json=body))
            events.append(line for line in response.iter_lines() if line.startswith("data:"))
            assert '"role":"assistant"' in next(events[-1])  # the stream is open
        thread = api.post("/threads", json={"messages": [{"role": "user", "content": "Still there?"}]})
        assert thread.status_code == 200, thread.text
        listed = api.get(f"/threads/{thread.json()['id']}/messages")
        assert [m["content"][0]["text"]["value"] for m in listed.json()["data"]] == ["Still there?"]
        metadata = model_metadata(api)
        assert (metadata["completed_requests"], metadata["cancelled_requests"]) == (completed, cancelled)


def test_stopping_the_model_ends_its_stream_and_its_waiting_request(tmp_path):
    """Stop cancels instead of draining: the running stream ends with an SSE `error` event, the request waiting for
    the one slot gets a 503 `model_stopping`, and the stop answers promptly."""
    server = LiveServer(tmp_path / "data").start()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "List numbers."}], "max_tokens": 1000, "response_format": ENDLESS}
    waiting = {}

    def wait_for_the_slot():
        with httpx.Client(base_url=server.api_url, timeout=300) as other:
            waiting["reply"] = other.post("/chat/completions", json=body)

    try:
        with httpx.Client(base_url=server.api_url, timeout=300) as api:
            api.put(f"/models/{MODEL}/start", json={"n_parallel": 1}).raise_for_status()  # one slot: the next one waits
            with api.stream("POST", "/chat/completions", json={**body, "stream": True}) as running:
                lines = running.iter_lines()
                assert '"role":"assistant"' in next(lines)
                thread = threading.Thread(target=wait_for_the_slot)
                thread.start()
                deadline = time.monotonic() + 120  # the waiting request reaches the queue (slow only on a loaded machine)
                while model_metadata(api)["queued_requests"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert model_metadata(api)["queued_requests"] == 1
                started = time.monotonic()
                stopped = api.put(f"/models/{MODEL}/stop")
                took = time.monotonic() - started
                rest = [line for line in lines if line]
            thread.join(300)
        assert stopped.status_code == 200 and stopped.json()["state"] == "downloaded"
        assert took < 30  # about 0.2 s when idle; draining the two 1000-token grammar generations would take minutes
        error_at = rest.index("event: error")
        assert json.loads(rest[error_at + 1].removeprefix("data: "))["error"]["code"] == "model_stopping"
        assert rest[error_at + 2:] == ["data: [DONE]"]
        refused = waiting["reply"]
        assert assert_openai_error(refused, 503)["code"] == "model_stopping"
        assert int(refused.headers["retry-after"]) >= 1
    finally:
        server.stop()
