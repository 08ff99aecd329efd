"""POST /v1/completions on the real SmolLM2 model, through the official `openai` package and raw HTTP; bodies checked
against OpenAI's published CreateCompletionResponse."""

from __future__ import annotations

import json
from collections import defaultdict

import openai
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error

MODEL = BUNDLED_MODEL_ID
PROMPT = "The capital of France is"
GREEDY = {"max_tokens": 12, "temperature": 0}


@pytest.fixture(scope="module")
def llama():
    """The same GGUF in llama-cpp-python itself (with flash attention, as the server runs it), for its own greedy
    completions and its tokenizer."""
    import llama_cpp

    model = llama_cpp.Llama(str(bundled_weights()), n_ctx=512, n_threads=1, flash_attn=True, verbose=False)
    yield model
    model.close()


def published(chunk: dict) -> dict:
    """A streamed chunk as OpenAI's published schema has it: OpenAI's stream sends `finish_reason: null` before a
    choice's last chunk and `usage: null` before the usage chunk, which the schema (that of the whole object)
    does not name; these are checked here and left out for the schema check."""
    chunk = dict(chunk)
    if chunk.get("usage", 0) is None:
        del chunk["usage"]
    choices = []
    for choice in chunk["choices"]:
        assert choice["finish_reason"] in (None, "stop", "length")
        choices.append({**choice, "finish_reason": choice["finish_reason"] or "stop"})
    return {**chunk, "choices": choices}


def sse_payloads(api, body: dict) -> list[dict]:
    with api.stream("POST", "/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    return [json.loads(event.removeprefix("data: ")) for event in events[:-2]]


def test_plain_completion_is_llama_cpp_pythons_own(openai_client, api, llama):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, **GREEDY)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-") and completion.model == MODEL
    (choice,) = completion.choices
    expected = llama.create_completion(PROMPT, **GREEDY)["choices"][0]
    assert (choice.index, choice.text, choice.finish_reason, choice.logprobs) == (0, expected["text"], expected["finish_reason"], None)
    prompt_tokens = len(llama.tokenize(PROMPT.encode(), special=True))
    assert completion.usage.prompt_tokens == prompt_tokens and completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == prompt_tokens + 12
    assert_valid(api.post("/completions", json={"model": MODEL, "prompt": PROMPT, **GREEDY}).json(), "CreateCompletionResponse")


def test_max_tokens_defaults_to_16_as_on_openai(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt="Count: 1, 2, 3, 4,", temperature=0)
    assert completion.usage.completion_tokens == 16 and completion.choices[0].finish_reason == "length"


def test_listed_prompts_get_one_choice_each_in_order(openai_client, llama):
    prompts = ["Once upon a time", "The three primary colours are", "def fibonacci(n):"]
    completion = openai_client.completions.create(model=MODEL, prompt=prompts, **GREEDY)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    alone = [openai_client.completions.create(model=MODEL, prompt=prompt, **GREEDY).choices[0].text for prompt in prompts]
    assert [choice.text for choice in completion.choices] == alone
    counts = [len(llama.tokenize(prompt.encode(), special=True)) for prompt in prompts]
    assert completion.usage.prompt_tokens == sum(counts) and completion.usage.completion_tokens == 36


def test_token_prompts_read_as_their_text(openai_client, llama):
    tokens = llama.tokenize(PROMPT.encode(), special=True)
    text = openai_client.completions.create(model=MODEL, prompt=PROMPT, **GREEDY).choices[0].text
    assert openai_client.completions.create(model=MODEL, prompt=tokens, **GREEDY).choices[0].text == text
    listed = openai_client.completions.create(model=MODEL, prompt=[tokens, tokens[:3]], **GREEDY)
    assert listed.choices[0].text == text and len(listed.choices) == 2
    echoed = openai_client.completions.create(model=MODEL, prompt=tokens, echo=True, **GREEDY)
    assert echoed.choices[0].text == PROMPT + text


def test_echo_puts_the_prompt_first(openai_client):
    text = openai_client.completions.create(model=MODEL, prompt=PROMPT, **GREEDY).choices[0].text
    echoed = openai_client.completions.create(model=MODEL, prompt=PROMPT, echo=True, **GREEDY).choices[0].text
    assert echoed == PROMPT + text


def test_streamed_matches_whole_and_each_chunk_is_a_text_completion(openai_client, api):
    prompts = ["Once upon a time", "1, 2, 3,"]
    whole = openai_client.completions.create(model=MODEL, prompt=prompts, n=2, seed=7, max_tokens=10, temperature=0.8)
    payloads = sse_payloads(api, {"model": MODEL, "prompt": prompts, "n": 2, "seed": 7, "max_tokens": 10, "temperature": 0.8,
                                  "stream_options": {"include_usage": True}})
    for payload in payloads:
        assert_valid(published(payload), "CreateCompletionResponse")
    *chunks, last = payloads
    assert len({payload["id"] for payload in payloads}) == 1
    texts, finishes = defaultdict(str), {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        assert choice["index"] not in finishes, "text after the choice's finish"
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert [texts[index] for index in range(4)] == [choice.text for choice in whole.choices]
    assert [finishes[index] for index in range(4)] == [choice.finish_reason for choice in whole.choices]
    assert len(chunks) > 8  # streamed token by token, not in one piece
    assert last["choices"] == [] and last["usage"] == whole.usage.model_dump(exclude_none=True)


def test_streamed_through_the_sdk_with_echo(openai_client):
    stream = openai_client.completions.create(model=MODEL, prompt=PROMPT, echo=True, stream=True, **GREEDY)
    text = "".join(chunk.choices[0].text for chunk in stream)
    assert text == PROMPT + openai_client.completions.create(model=MODEL, prompt=PROMPT, **GREEDY).choices[0].text


def test_n_choices_per_prompt_same_seed_same_choices(openai_client):
    request = dict(model=MODEL, prompt=["Write a poem:", "A list of fruits:"], n=3, seed=42, max_tokens=12, temperature=1.0)
    first = openai_client.completions.create(**request)
    assert [choice.index for choice in first.choices] == list(range(6))
    assert len({choice.text for choice in first.choices[:3]}) > 1  # each choice samples on its own
    again = openai_client.completions.create(**request)
    assert [choice.text for choice in again.choices] == [choice.text for choice in first.choices]
    single = openai_client.completions.create(**{**request, "n": 1})
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # each prompt counted once, not per choice
    assert single.usage.completion_tokens < first.usage.completion_tokens <= 72


def test_stop_strings_end_the_choice(openai_client):
    full = openai_client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=16, temperature=0).choices[0].text
    assert " 5" in full, full
    cut = openai_client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=16, temperature=0, stop=[" 5"])
    assert cut.choices[0].text == full[: full.index(" 5")] and cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"suffix": " and that is all."}, "suffix", "unsupported_parameter"),  # the bundled model has no FIM tokens
        ({"best_of": 3}, "best_of", "unsupported_parameter"),
        ({"n": 9}, "n", "invalid_value"),  # more than the model's n_parallel (8)
        ({"prompt": [1, 2, 10**6]}, "prompt", "invalid_token"),
        ({"prompt": "word " * 9000}, "prompt", "context_length_exceeded"),
    ],
)
def test_what_the_engine_cannot_do_is_a_400_naming_the_field(api, extra, param, code):
    error = assert_openai_error(api.post("/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 2, **extra}), 400)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"logprobs": 6}, "logprobs"), ({"logprobs": -1}, "logprobs"), ({"logit_bias": {"50": 5}}, "logit_bias"), ({"prompt": []}, "prompt"), ({"max_tokens": 0}, "max_tokens")],
)
def test_unsupported_or_malformed_fields_are_refused_by_the_spec(api, extra, param):
    error = assert_openai_error(api.post("/completions", json={"model": MODEL, "prompt": PROMPT, **extra}), 400)
    assert error["param"].startswith(param)


def test_logprobs_score_every_generated_token_plain_and_streamed(openai_client, api, llama):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, logprobs=3, **GREEDY)
    assert_valid(completion.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    (choice,) = completion.choices
    scored = choice.logprobs
    assert "".join(scored.tokens) == choice.text and len(scored.tokens) == completion.usage.completion_tokens
    assert scored.text_offset == [sum(map(len, scored.tokens[:i])) for i in range(len(scored.tokens))]
    for token, logprob, top in zip(scored.tokens, scored.token_logprobs, scored.top_logprobs):
        assert len(top) == 3 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob) and top[token] == pytest.approx(logprob)  # greedy: the likeliest
    streamed = [payload["choices"][0]["logprobs"] for payload in sse_payloads(api, {"model": MODEL, "prompt": PROMPT, "logprobs": 3, **GREEDY}) if payload["choices"]]
    assert sum((block["tokens"] for block in streamed), []) == scored.tokens
    assert sum((block["text_offset"] for block in streamed), []) == scored.text_offset
    assert sum((block["token_logprobs"] for block in streamed), []) == pytest.approx(scored.token_logprobs, abs=1e-6)


def test_logprobs_with_echo_is_a_400(api):
    error = assert_openai_error(api.post("/completions", json={"model": MODEL, "prompt": PROMPT, "logprobs": 1, "echo": True, "max_tokens": 2}), 400)
    assert (error["param"], error["code"]) == ("echo", "unsupported_parameter")


def test_best_of_equal_to_n_and_labels_are_accepted(openai_client):
    completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, n=2, best_of=2, user="u-1", max_tokens=2)
    assert len(completion.choices) == 2


def test_unknown_model_is_a_404(openai_client):
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)
    assert raised.value.code == "model_not_found"


class FimVocabulary:
    """A vocabulary with fill-in-the-middle tokens 7, 8, 9 (the bundled model has none)."""

    def token_prefix(self):
        return 7

    def token_suffix(self):
        return 8

    def token_middle(self):
        return 9


def test_fill_in_the_middle_reads_prefix_then_suffix_then_generates_the_middle():
    from jan_server.models.raw_prompt import fill_in_the_middle

    assert fill_in_the_middle(FimVocabulary(), [1, 2], [3]) == [7, 1, 2, 8, 3, 9]
