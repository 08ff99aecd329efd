"""The prompt cache on the real SmolLM2 model: what the usage of each API says was reused (`cached_tokens`) is what
the scheduler found in its cache rather than read; a conversation evicted from its slot resumes from host memory,
and after a restart from disk, reading only its new message; the host tier keeps to its budget."""

from __future__ import annotations

import shutil

import httpx
import pytest

from jan_server.models.lifecycle import ModelManager
from jan_server.models.prompt_cache import HostCache, MiB
from jan_server.models.registry import BUNDLED_MODEL_ID, Registry
from tests.live_server import PATIENT, LiveServer, openai_at

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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The bundled model in-process, deterministic, with a host cache of `BUDGET` bytes."""
    manager = ModelManager(Registry(tmp_path_factory.mktemp("models")), n_threads=1, prompt_cache=HostCache(BUDGET), deterministic=True)
    yield manager
    manager.close()


@pytest.fixture(scope="module")
def cold_models(tmp_path_factory):
    """The bundled model in-process, deterministic, without a prompt cache."""
    manager = ModelManager(Registry(tmp_path_factory.mktemp("cold")), n_threads=1, deterministic=True)
    yield manager
    manager.close()


BUDGET = 8 * MiB  # a few conversations of this test's length (about 23 KB of cells a token)


def one_slot(models, **settings):
    """The bundled model with one slot, so that every other conversation evicts the last one."""
    models.stop(MODEL)
    models.start(MODEL, {"n_parallel": 1, "ctx_len": 1024, **settings})
    return models.running(MODEL)


#: A system prompt long enough (over 64 tokens) that a seeded job's cells of it count as exact with flash attention.
SYSTEM = {"role": "system", "content": "You are a patient astronomy tutor. " * 3 + "Answer in plain words, briefly, and "
          "never invent numbers you are unsure of. Prefer short sentences. Mention one fact a child would enjoy. " * 3}
FIRST = [SYSTEM, {"role": "user", "content": "Tell me about the moon in two sentences."}]
OTHER = [{"role": "user", "content": "Write a short poem about autumn leaves and rain."}]
NEXT = {"role": "user", "content": "How far away is it from the earth?"}


def run(runner, messages, **parameters):
    """(text, job, prompt tokens the scheduler read) of one chat."""
    before = runner.stats()["prompt_tokens_read"]
    job = runner.submit(runner.prepare(messages, {"max_tokens": 24, "temperature": 0, **parameters}))
    return job.result(), job, runner.stats()["prompt_tokens_read"] - before


@pytest.mark.parametrize("flash_attn", [True, False])
def test_an_evicted_conversation_resumes_from_the_host_cache_as_if_it_had_kept_its_slot(models, cold_models, flash_attn):
    """Its next turn reads only the new message, and gives the text it gives in a slot it never left."""
    chat = one_slot(models, flash_attn=flash_attn)
    answer, _, _ = run(chat, FIRST)
    run(chat, OTHER)  # takes the only slot: the moon's cells go to the host cache
    follow_up = FIRST + [{"role": "assistant", "content": answer}, NEXT]
    new = len(chat.prepare(follow_up, {}).prompt_tokens) - len(chat.prepare(FIRST + [{"role": "assistant", "content": answer}], {}).prompt_tokens)
    restored_before = chat.stats()["restored_prompt_tokens"]
    text, job, read = run(chat, follow_up)
    restored = chat.stats()["restored_prompt_tokens"] - restored_before
    assert 0 < new <= read <= new + 16  # the new message and the template's tokens around it, as in a kept slot
    assert job.cached_tokens == restored == len(job.prompt_tokens) - read
    assert chat.stats()["prompt_cache_bytes"] <= BUDGET
    kept = one_slot(cold_models, flash_attn=flash_attn)  # no host cache: the conversation keeps the slot
    assert run(kept, FIRST)[0] == answer
    assert run(kept, follow_up)[0] == text


def test_a_seeded_conversation_restored_from_the_host_cache_gives_a_cold_reads_text(models, cold_models):
    seeded = {"temperature": 0.8, "seed": 7}
    chat = one_slot(models)
    answer, _, _ = run(chat, FIRST, **seeded)
    run(chat, OTHER)
    follow_up = FIRST + [{"role": "assistant", "content": answer}, NEXT]
    restored_before = chat.stats()["restored_prompt_tokens"]
    text, job, _ = run(chat, follow_up, **seeded)
    assert job.cached_tokens == chat.stats()["restored_prompt_tokens"] - restored_before > 0
    cold = one_slot(cold_models)
    assert run(cold, follow_up, **seeded)[0] == text and cold.stats()["cached_prompt_tokens"] == 0


def test_the_host_cache_never_holds_more_than_its_budget(models):
    chat = one_slot(models)
    for topic in ("the sun", "rivers", "mountains", "the sea", "the moon"):
        run(chat, [SYSTEM, {"role": "user", "content": f"Tell me about {topic}."}])
        assert 0 < chat.stats()["prompt_cache_bytes"] <= BUDGET or topic == "the sun"  # nothing evicted before
    assert len(models.prompt_cache) >= 1


def stats_of(server: LiveServer) -> dict:
    return httpx.get(f"{server.api_url}/models/{MODEL}", timeout=PATIENT).json()["metadata"]


def test_a_conversation_resumes_from_disk_after_a_restart_and_a_damaged_entry_is_skipped(tmp_path):
    """The server stops with the conversation in a slot: its cells go to disk. After a restart its next turn
    restores them and reads only the new message, with the text a fresh server gets from a slot it never left
    (not the session's server, whose cache of other prompts would split this one's reading differently); from a
    copy of the data dir whose entry was damaged, the entry is deleted and the prompt read."""
    with LiveServer(tmp_path / "data") as first:
        turn = openai_at(first.api_url).chat.completions.create(model=MODEL, messages=FIRST, **GREEDY)
    answer = turn.choices[0].message.content
    follow_up = FIRST + [{"role": "assistant", "content": answer}, NEXT]
    (entry,) = (tmp_path / "data" / "prompt-cache").glob("*.kv")
    shutil.copytree(tmp_path / "data", tmp_path / "damaged")
    damaged = tmp_path / "damaged" / "prompt-cache" / entry.name
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    with LiveServer(tmp_path / "data") as restarted:
        resumed = openai_at(restarted.api_url).chat.completions.create(model=MODEL, messages=follow_up, **GREEDY)
        stats = stats_of(restarted)
    cached = resumed.usage.prompt_tokens_details.cached_tokens
    assert cached == stats["restored_prompt_tokens"] == stats["cached_prompt_tokens"] >= turn.usage.prompt_tokens
    assert stats["prompt_tokens_read"] == resumed.usage.prompt_tokens - cached <= 30  # the new message and its markup
    with LiveServer(tmp_path / "reference") as reference:
        kept_in_slot = openai_at(reference.api_url)
        kept_in_slot.chat.completions.create(model=MODEL, messages=FIRST, **GREEDY)
        kept = kept_in_slot.chat.completions.create(model=MODEL, messages=follow_up, **GREEDY)
    assert resumed.choices[0].message.content == kept.choices[0].message.content

    with LiveServer(tmp_path / "damaged") as skipping:
        read = openai_at(skipping.api_url).chat.completions.create(model=MODEL, messages=follow_up, **GREEDY)
        stats = stats_of(skipping)
    assert read.usage.prompt_tokens_details.cached_tokens == stats["restored_prompt_tokens"] == 0
    assert stats["prompt_tokens_read"] == read.usage.prompt_tokens and not damaged.exists()
