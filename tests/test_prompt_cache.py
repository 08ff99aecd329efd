"""The prompt cache on the real SmolLM2 model, through the running server: what the usage of each API says was
reused (`cached_tokens`) is what the scheduler found in its cache rather than read."""

from __future__ import annotations

from jan_server.models.registry import BUNDLED_MODEL_ID

MODEL = BUNDLED_MODEL_ID
GREEDY = {"max_tokens": 16, "temperature": 0}


def cached_prompt_tokens(api) -> int:
    return api.get(f"/models/{MODEL}").json()["metadata"]["cached_prompt_tokens"]


def test_cached_tokens_are_what_the_scheduler_reused_on_every_api(openai_client, api):
    question = [{"role": "user", "content": "Which ocean is the largest? Answer in a sentence."}]
    first = openai_client.chat.completions.create(model=MODEL, messages=question, **GREEDY)
    before = cached_prompt_tokens(api)
    follow_up = question + [{"role": "assistant", "content": first.choices[0].message.content},
                            {"role": "user", "content": "And the smallest?"}]
    second = openai_client.chat.completions.create(model=MODEL, messages=follow_up, **GREEDY)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == cached_prompt_tokens(api) - before and first.usage.prompt_tokens <= cached < second.usage.prompt_tokens

    prompt = "The three primary colours are"
    openai_client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    before = cached_prompt_tokens(api)
    again = openai_client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    assert again.usage.prompt_tokens_details.cached_tokens == cached_prompt_tokens(api) - before > 0

    response = openai_client.responses.create(model=MODEL, input="Name a large river.", max_output_tokens=16, temperature=0)
    before = cached_prompt_tokens(api)
    next_turn = openai_client.responses.create(model=MODEL, input="Where does it flow?", previous_response_id=response.id,
                                               max_output_tokens=16, temperature=0)
    cached = next_turn.usage.input_tokens_details.cached_tokens
    assert cached == cached_prompt_tokens(api) - before and response.usage.input_tokens <= cached < next_turn.usage.input_tokens
