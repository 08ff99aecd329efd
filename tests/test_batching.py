"""Continuous batching on the real SmolLM2 model, in-process: sequences decoded together in one context."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
import time

import llama_cpp
import pytest
from llama_cpp._internals import LlamaModel, LlamaSampler

from jan_server.models.batching import cache_key
from jan_server.models.grammar import grammar_of
from jan_server.models.lifecycle import ModelManager
from jan_server.errors import ApiError, InvalidRequestError, NotFoundError, ServerError, UnavailableError
from jan_server.models import jobs
from jan_server.models.registry import BUNDLED_MODEL_ID, Registry
from jan_server.models.scheduler import DECODE_NICE
from tests.test_chat import ENDLESS
from tests.fake_scheduler import smallest_n_batch, within_wait


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    manager = ModelManager(Registry(tmp_path_factory.mktemp("models")), n_threads=1, max_queued_requests=8, deterministic=True)
    yield manager
    manager.close()


def runner(models, n_parallel, flash_attn=True, n_batch=512, deterministic=True):
    """The bundled model with n_parallel slots (restarted if it runs with other settings); deterministic unless
    told otherwise, as the seed-invariance tests here need."""
    running = models.running(BUNDLED_MODEL_ID)
    settings = {"n_parallel": n_parallel, "ctx_len": 512, "flash_attn": flash_attn, "n_batch": n_batch, "deterministic": deterministic}
    if running is not None and any(running.load_settings[key] != value for key, value in settings.items()):
        models.stop(BUNDLED_MODEL_ID)
    models.start(BUNDLED_MODEL_ID, settings)
    return models.running(BUNDLED_MODEL_ID)


def test_rope_scaling_reaches_the_context_and_the_cells_key(models):
    """YaRN scaling is llama's context's (the same greedy prompt reads otherwise) and in the prompt cache's key
    (cells read under one scaling never serve another)."""
    greedy = {"temperature": 0, "max_tokens": 12}
    plain = runner(models, 1)
    text = ask(plain, "Name three colours.", **greedy)[0]
    key = cache_key(plain.record, plain.load_settings)
    models.stop(BUNDLED_MODEL_ID)
    models.start(BUNDLED_MODEL_ID, {"n_parallel": 1, "ctx_len": 512, "deterministic": True, "rope_scaling": "yarn", "rope_scale": 4})
    try:
        scaled = models.running(BUNDLED_MODEL_ID)
        assert scaled.load_settings["rope_scale"] == 4.0
        assert ask(scaled, "Name three colours.", **greedy)[0] != text
        assert cache_key(scaled.record, scaled.load_settings) != key
    finally:
        models.stop(BUNDLED_MODEL_ID)


def ask(runner, content, **parameters):
    job = runner.submit(runner.prepare([{"role": "user", "content": content}], parameters))
    return job.result(), job


def together(runner, requests):
    """Submit every (content, parameters) at once; their (text, job) in order."""
    jobs = [runner.submit(runner.prepare([{"role": "user", "content": content}], parameters)) for content, parameters in requests]
    results = [None] * len(jobs)

    def read(index):
        results[index] = (jobs[index].result(), jobs[index])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def test_batched_sequences_match_their_solo_runs(models):
    """More requests than slots: all are served (slots are reused), each as if it had the model alone."""
    batched = runner(models, 3)
    requests = [(f"Count from {n} to {n + 10}.", {"max_tokens": 12, "temperature": 0}) for n in range(5)]
    results = together(batched, requests)
    alone = runner(models, 1)
    for (content, parameters), (text, job) in zip(requests, results):
        solo_text, solo = ask(alone, content, **parameters)
        assert (text, job.finish_reason, job.completion_tokens) == (solo_text, solo.finish_reason, solo.completion_tokens)
    stats = alone.stats()
    assert (stats["n_parallel"], stats["completed_requests"], stats["queued_requests"]) == (1, 5, 0)


def test_seeded_sampling_does_not_depend_on_the_batch(models):
    batched = runner(models, 4)
    poem = ("Write a short poem about the sea.", {"max_tokens": 16, "temperature": 0.7, "seed": 1234})
    alone, _ = ask(batched, *poem[:1], **poem[1])
    crowd = together(batched, [("Tell me a story.", {"max_tokens": 24, "temperature": 0.7}), poem,
                               ("Name three colours.", {"max_tokens": 20, "temperature": 0.9, "seed": 7})])
    assert crowd[1][0] == alone


def test_without_deterministic_seeded_chats_batch_and_reuse_the_cache_like_any(models):
    """Off (the default), no sequence is decoded apart for its seed and a seeded conversation's next turn reads
    only its new message; the same request still gives the same text on an idle server (beside others, in a
    unified cache's batch, a sampled token near a boundary may differ: the strict promise is deterministic's)."""
    chat = runner(models, 2, deterministic=False)
    exact_sets = []
    decode = chat.backend.decode
    chat.backend.decode = lambda rows, exact: (exact_sets.append(set(exact)), decode(rows, exact))
    try:
        seeded = {"max_tokens": 16, "temperature": 0.8, "seed": 5}
        crowd = together(chat, [("Write a short poem about the sea.", seeded), ("Name three colours.", {**seeded, "seed": 6})])
        assert exact_sets and not any(exact_sets)
        record = converse(chat, TURNS[:2], max_tokens=24, temperature=0.8, seed=99)
        (previous, _, _, _), (prompt, read, _, new) = record
        assert new < read <= new + 16 < prompt - previous
        alone = ask(chat, "Write a short poem about the sea.", **seeded)[0]
        assert ask(chat, "Write a short poem about the sea.", **seeded)[0] == alone and crowd[0][0]
    finally:
        chat.backend.decode = decode


def test_a_seeded_prompt_read_beside_a_generating_sequence_gives_its_text_alone(models):
    """A prompt is read in slot 1 while slot 0 generates: llama.cpp would split their shared batch so that the
    prompt chunk's first token gets a ubatch alone (see jan_server.models.llama_backend), changing the seed's
    text. Each prompt follows another in slot 1, so its chunk starts past the chat template's shared start."""
    seeded = {"max_tokens": 32, "temperature": 0.8, "seed": 4321}
    prompts = ["Describe a cat in one sentence.", "Write a short poem about the sea.", "Name a river and a mountain."]
    solo = []
    for prompt in prompts:
        models.stop(BUNDLED_MODEL_ID)
        solo.append(ask(runner(models, 1), prompt, **seeded)[0])  # a cold read
    models.stop(BUNDLED_MODEL_ID)
    pair = runner(models, 2)
    endless = pair.submit(pair.prepare([{"role": "user", "content": "List numbers."}], {"max_tokens": 1000, "grammar": grammar_of(ENDLESS)}))
    deltas = iter(endless)
    next(deltas)  # generating in slot 0
    beside = [ask(pair, prompt, **seeded)[0] for prompt in ["Hello there.", *prompts]][1:]  # each in slot 1
    endless.cancel()
    "".join(deltas)
    assert beside == solo


@pytest.mark.parametrize("n_batch", [smallest_n_batch(), 65], ids=["spec-minimum", "issue-27"])
def test_a_prompt_read_in_the_smallest_batches_gives_the_seeds_text(models, n_batch):
    """With flash attention and the least n_batch a start may ask for (raised to make room for two chunks of 64), a
    prompt longer than the batch is read in chunks of 64 or more (it once stalled after two: issue 27's livelock),
    so its seed gives the text a batch of 512 gives."""
    prompt = " ".join(f"Item {n} is a {colour} box." for n, colour in enumerate(["red", "green", "blue"] * 12))
    seeded = {"max_tokens": 16, "temperature": 0.8, "seed": 99}
    small = runner(models, 1, n_batch=n_batch)
    text, job = within_wait(lambda: ask(small, prompt, **seeded))
    assert small.scheduler.n_batch == 1 + 2 * 64 < len(job.prompt_tokens) < 512 - 16
    assert text == ask(runner(models, 1), prompt, **seeded)[0]


def test_a_seeded_chat_generating_beside_another_gives_its_text_alone(models, tmp_path):
    """With flash attention and two threads, llama.cpp splits a lone sequence's token across the threads once the
    sequence holds over 256 cells, and computes it another way beside other sequences' tokens (see
    jan_server.models.llama_backend): a seeded sequence's tokens are decoded on their own, so its text stays."""
    models.stop(BUNDLED_MODEL_ID)  # this test's model takes both threads
    manager = ModelManager(Registry(tmp_path), n_threads=2, max_queued_requests=8, deterministic=True)
    try:
        manager.start(BUNDLED_MODEL_ID, {"n_parallel": 2, "ctx_len": 1024})
        chat = manager.running(BUNDLED_MODEL_ID)
        assert chat.backend.flash_attn and chat.load_settings["n_threads"] == 2
        story = " ".join(f"On day {day} the keeper climbed the tower, trimmed the wick and watched the grey sea." for day in range(1, 21))
        seeded = {"max_tokens": 64, "temperature": 0.8, "seed": 11}
        texts = []
        for prompt in ("Go on with the story.", "Tell the story again, shorter."):
            messages = [{"role": "user", "content": f"{story}\n\n{prompt}"}]
            alone = chat.submit(chat.prepare(messages, seeded))
            texts.append(alone.result())
            assert len(alone.prompt_tokens) > 300
            endless = chat.submit(chat.prepare([{"role": "user", "content": "List numbers."}], {"max_tokens": 1000, "grammar": grammar_of(ENDLESS)}))
            deltas = iter(endless)
            next(deltas)  # generating in the other slot
            beside = chat.submit(chat.prepare(messages, seeded)).result()
            endless.cancel()
            "".join(deltas)
            assert beside == texts[-1]
    finally:
        manager.close()


def test_decoding_threads_run_nicer_than_the_server(models, tmp_path):
    """The scheduler thread and the compute thread llama.cpp starts from it run DECODE_NICE steps nicer than the
    rest of the server, so the threads that serve HTTP are never kept waiting behind them."""

    def nice() -> dict[int, int]:
        """Each live thread's niceness (a thread may end between the listing and the read)."""
        values = {}
        for tid in map(int, os.listdir("/proc/self/task")):
            with contextlib.suppress(ProcessLookupError):
                values[tid] = os.getpriority(os.PRIO_PROCESS, tid)
        return values

    models.stop(BUNDLED_MODEL_ID)
    base, before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), nice()
    manager = ModelManager(Registry(tmp_path), n_threads=2, max_queued_requests=8)
    try:
        manager.start(BUNDLED_MODEL_ID, {"n_parallel": 1, "ctx_len": 512})
        chat = manager.running(BUNDLED_MODEL_ID)
        assert ask(chat, "Say hi.", max_tokens=4)
        started = {tid: value for tid, value in nice().items() if tid not in before}
        assert started[chat.scheduler.thread.native_id] == base + DECODE_NICE
        assert sorted(value for value in started.values() if value != base) == [base + DECODE_NICE] * 2
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        manager.close()


def test_cancelled_sequence_frees_its_slot_at_once(models):
    single = runner(models, 1)
    endless = single.submit(single.prepare([{"role": "user", "content": "List numbers."}], {"max_tokens": 400, "grammar": grammar_of(ENDLESS)}))
    first = next(iter(endless))  # generating
    assert first
    waiting = single.submit(single.prepare([{"role": "user", "content": "Hi"}], {"max_tokens": 3}))
    assert single.stats()["queued_requests"] == 1  # the only slot is taken
    endless.cancel()
    "".join(endless)
    assert endless.finish_reason is None  # cancelled
    waiting.result()
    assert waiting.finish_reason in ("stop", "length") and waiting.completion_tokens <= 3
    stats = single.stats()
    assert stats["cancelled_requests"] == 1 and stats["generated_tokens"] < 100


def test_a_repeated_prompt_gives_the_same_text_from_the_prompt_cache(models):
    """The second request finds its exact prompt cached in a free slot and samples from the kept logits."""
    cached = runner(models, 2)
    for parameters in ({"max_tokens": 16, "temperature": 0}, {"max_tokens": 16, "temperature": 0.7, "seed": 42}):
        first, _ = ask(cached, "Name a famous painter.", **parameters)
        ask(cached, "Name a famous composer.", max_tokens=4)  # another prompt in the other slot
        again, job = ask(cached, "Name a famous painter.", **parameters)
        assert again == first and job.usage["completion_tokens"] > 0


def converse(runner, turns, **parameters):
    """Run a conversation turn by turn: each turn's (prompt tokens, prompt tokens the scheduler read, answer, tokens
    of the new message: the prompt's after the last answer)."""
    messages, record = [], []
    for content in turns:
        messages.append({"role": "user", "content": content})
        before = runner.stats()["prompt_tokens_read"]
        job = runner.submit(runner.prepare(messages, parameters))
        answer = job.result()
        new = len(job.prompt_tokens) - len(runner.prepare(messages[:-1] + [{"role": "user", "content": ""}], parameters).prompt_tokens)
        record.append((len(job.prompt_tokens), runner.stats()["prompt_tokens_read"] - before, answer, new))
        messages.append({"role": "assistant", "content": answer})
    return record


TURNS = ["Tell me about the sea in two sentences.", "And what lives in it? Name a few animals, please.",
         "Which of them is the largest, and how large does it grow?", "Thank you. Now say something about rivers."]


@pytest.mark.parametrize("flash_attn", [True, False])
def test_each_turn_of_a_conversation_reads_only_its_new_message(models, flash_attn):
    """The slot keeps the last turn's prompt and answer: the next turn reads the new message; a seeded one reads
    the answer again too (see jan_server.models.slots), and at least a chunk of `min_chunk`, not the whole
    conversation."""
    chat = runner(models, 2, flash_attn)
    record = converse(chat, TURNS, max_tokens=24, temperature=0)
    for (previous, _, _, _), (prompt, read, _, new) in zip(record, record[1:]):
        assert new < read <= new + 16 < prompt - previous  # the template's tokens around it, a token of the answer
    seeded = converse(chat, TURNS, max_tokens=24, temperature=0.8, seed=99)
    floor = chat.backend.min_chunk  # with flash attention 64: a shorter prompt's cells are not a cold read's
    for (previous, _, _, _), (prompt, read, _, _) in zip(seeded, seeded[1:]):
        assert read == (prompt if previous < floor else max(prompt - previous, floor))
    assert record[-1][0] > 4 * record[-1][1] and seeded[-1][0] > 2 * seeded[-1][1]


def conversation(turns, record) -> list[dict]:
    """The messages of a conversation `converse` ran, its last answer left out."""
    messages = []
    for content, (_, _, answer, _) in zip(turns, record):
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages[:-1]


@pytest.mark.parametrize("flash_attn", [True, False])
def test_seeded_text_is_the_same_with_and_without_the_cached_prefix(models, flash_attn):
    """Whether the prefix came from a seeded conversation's cells or from an unseeded one's (whose answer cells a
    seeded job must not reuse), a seed gives the text of a cold read."""
    seeded = {"max_tokens": 24, "temperature": 0.8, "seed": 99}
    chat = runner(models, 2, flash_attn)
    cached = converse(chat, TURNS, **seeded)
    greedy = conversation(TURNS, converse(chat, TURNS, max_tokens=24, temperature=0))
    before = chat.stats()
    after_greedy = chat.submit(chat.prepare(greedy, seeded))
    text_after_greedy = after_greedy.result()
    held, read = (chat.stats()[key] - before[key] for key in ("cached_prompt_tokens", "prompt_tokens_read"))
    assert held + read == len(after_greedy.prompt_tokens) and held < len(after_greedy.prompt_tokens) - 24  # not its answer
    for messages, text in ((conversation(TURNS, cached), cached[-1][2]), (greedy, text_after_greedy)):
        models.stop(BUNDLED_MODEL_ID)
        fresh = runner(models, 1, flash_attn)  # a new context: nothing cached
        assert fresh.submit(fresh.prepare(messages, seeded)).result() == text
        assert fresh.stats()["cached_prompt_tokens"] == 0


def test_seeded_text_is_the_same_when_the_prefix_is_copied_from_a_busy_slot(models):
    chat = runner(models, 2)
    system = {"role": "system", "content": "You are a ship's cook on a long voyage across a cold northern sea. "
              "Answer every question briefly, in the voice of a cheerful old sailor who misses the harbour. "
              "You know every dish that can be made from salted fish, hard biscuits, dried peas and onions, "
              "and you never tell the same story twice. The crew trusts you more than the captain, and every "
              "evening they gather in the galley to hear about storms, whales, far ports and the cook's old ship."}
    endless = {"max_tokens": 400, "grammar": grammar_of(ENDLESS)}
    busy = chat.submit(chat.prepare([system, {"role": "user", "content": "Tell me about the sea."}], endless))
    next(iter(busy))  # generating in one slot, its prompt read
    before = chat.stats()["cached_prompt_tokens"]
    parameters = {"max_tokens": 24, "temperature": 0.8, "seed": 7}
    messages = [system, {"role": "user", "content": "What is for dinner?"}]
    copied = chat.submit(chat.prepare(messages, parameters))
    text = copied.result()
    busy.cancel()
    busy.result()
    assert chat.stats()["cached_prompt_tokens"] - before > 30  # the system prompt came from the busy slot
    fresh = runner(models, 1)
    assert fresh.submit(fresh.prepare(messages, parameters)).result() == text


def test_n_choices_share_one_prefill_and_each_matches_its_solo_seed(models):
    group = runner(models, 3)
    messages = [{"role": "user", "content": "Write a line about autumn."}]
    parameters = {"max_tokens": 16, "temperature": 0.9, "seed": 500}
    before = group.stats()["prompt_tokens_read"]
    choices = group.submit_choices(group.prepare(messages, parameters), 3)
    texts = jobs.results(choices)
    assert group.stats()["prompt_tokens_read"] - before == len(choices[0].prompt_tokens)  # read once
    assert len(set(texts)) > 1 and all(job.finish_reason in ("stop", "length") for job in choices)
    alone = runner(models, 1)
    for index, text in enumerate(texts):
        solo = alone.submit(alone.prepare(messages, {**parameters, "seed": 500 + index}))
        assert solo.result() == text, index
    refused = None
    try:  # not pytest.raises: its traceback would keep the runner alive past this test (see the load test)
        alone.submit_choices(alone.prepare(messages, parameters), 2)
    except InvalidRequestError as error:
        refused = (error.status, error.param)
    assert refused == (400, "n")


def test_unknown_model_ids_leave_nothing_behind(models):
    """A chat naming any model id must not make the manager keep something for it (memory a client could grow)."""
    for n in range(50):
        with pytest.raises(NotFoundError):
            models.runner_for(f"no-such-model-{n}")
    assert not [model_id for model_id in models._locks if model_id.startswith("no-such-model")]


def test_one_failing_sequence_leaves_the_others_generating(models, monkeypatch):
    """Sampling fails for one sequence of a batch (its sampler is marked by its presence penalty): that job alone
    gets a 500 `generation_failed`; the sequence decoded beside it gives the same text as alone."""
    steady = ("Count from 1 to 50.", {"max_tokens": 48, "temperature": 0})
    solo_text, _ = ask(runner(models, 1), *steady[:1], **steady[1])
    poisoned = set()
    add_penalties, sample = LlamaSampler.add_penalties, llama_cpp.llama_sampler_sample

    def marking(chain, n_vocab, last_n, repeat, frequency, presence):
        add_penalties(chain, n_vocab, last_n, repeat, frequency, presence)
        if presence == 1.5:
            poisoned.add(ctypes.cast(chain.sampler, ctypes.c_void_p).value)

    def failing(sampler, ctx, index):
        if ctypes.cast(sampler, ctypes.c_void_p).value in poisoned:
            raise RuntimeError("sampler broke")
        return sample(sampler, ctx, index)

    monkeypatch.setattr(LlamaSampler, "add_penalties", marking)
    monkeypatch.setattr(llama_cpp, "llama_sampler_sample", failing)
    pair = runner(models, 2)
    good = pair.submit(pair.prepare([{"role": "user", "content": steady[0]}], steady[1]))
    deltas = iter(good)
    text = next(deltas)  # generating: the failing job joins its batch
    bad = pair.submit(pair.prepare([{"role": "user", "content": "Tell me a story."}], {"max_tokens": 24, "presence_penalty": 1.5}))
    with pytest.raises(ServerError) as failed:
        bad.result()
    assert (failed.value.status, failed.value.code) == (500, "generation_failed") and poisoned
    assert good.completion_tokens < 48  # it was still generating when the other failed
    assert (text + "".join(deltas), good.finish_reason) == (solo_text, "length")


def test_stopping_a_model_cancels_its_running_and_waiting_jobs_at_once(models):
    single = runner(models, 1)
    endless = single.submit(single.prepare([{"role": "user", "content": "List numbers."}], {"max_tokens": 400, "grammar": grammar_of(ENDLESS)}))
    assert next(iter(endless))  # generating
    waiting = [single.submit(single.prepare([{"role": "user", "content": f"List {n}."}], {"max_tokens": 400, "grammar": grammar_of(ENDLESS)}))
               for n in range(6)]
    started = time.monotonic()
    models.stop(BUNDLED_MODEL_ID)
    # cancelling waits for one decode (well under a second when idle); draining would take 2800 grammar-sampled
    # tokens, minutes even on an idle machine. The wide margin is for a loaded one.
    assert time.monotonic() - started < 30
    for job in [endless, *waiting]:
        with pytest.raises(UnavailableError) as stopped:
            job.result()
        assert (stopped.value.status, stopped.value.code) == (503, "model_stopping")
    assert models.running(BUNDLED_MODEL_ID) is None


def test_a_load_that_fails_after_the_context_exists_frees_it(tmp_path, monkeypatch):
    """A chat template that does not compile fails the start after the context was made: context, batch and
    model are freed, each once."""
    gc.collect()  # a runner an earlier test left in a reference cycle closes its model again when collected
    freed = []
    for name in ("llama_free", "llama_batch_free"):
        real = getattr(llama_cpp, name)
        monkeypatch.setattr(llama_cpp, name, lambda handle, real=real, name=name: (freed.append(name), real(handle))[1])
    close = LlamaModel.close
    monkeypatch.setattr(LlamaModel, "close", lambda model: (freed.append("model"), close(model))[1])
    created = []
    init = llama_cpp.llama_init_from_model
    monkeypatch.setattr(llama_cpp, "llama_init_from_model", lambda *args: created.append(init(*args)) or created[-1])
    monkeypatch.setattr(LlamaModel, "metadata", lambda model: {"tokenizer.chat_template": "{% for message in %}"})
    manager = ModelManager(Registry(tmp_path / "models"), n_threads=1)
    with pytest.raises(ApiError) as failed:
        manager.start(BUNDLED_MODEL_ID)
    assert (failed.value.status, failed.value.code) == (409, "model_load_failed")
    assert created and created[0]  # the context existed when the template failed
    assert sorted(freed) == ["llama_batch_free", "llama_free", "model"]
    manager.close()
