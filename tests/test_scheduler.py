"""The scheduler against a fake backend, in milliseconds: admission, slots, the prompt cache, cancellation,
failure isolation, liveness, close and the queue limit.

The fake backend (tests/fake_scheduler.py) samples token 1, 2, 3, ... for each sequence. Waits have generous
limits (`WAIT`) only so that a broken scheduler fails the test instead of hanging it."""

from __future__ import annotations

import threading
import time

import pytest

from jan_server.errors import ConflictError, RateLimitError, ServerError, UnavailableError
from jan_server.models import jobs
from jan_server.models import scheduler as scheduler_module
from jan_server.models.prompt_cache import HostCache
from jan_server.models.scheduler import Scheduler
from jan_server.models.slots import COPY_GAIN, SlotCache
from tests.fake_scheduler import ENDLESS, WAIT, error_of, first_delta, job, outcome, smallest_n_batch, stick, within_wait


def test_jobs_are_admitted_in_arrival_order(make):
    scheduler, backend = make(1)
    running = scheduler.submit(job(seed=0, max_tokens=ENDLESS))
    first_delta(running)
    waiting = [scheduler.submit(job(seed=n)) for n in range(1, 6)]
    running.cancel()
    for n, queued in enumerate(waiting, 1):
        assert outcome(queued) == ("<1><2><3>", "length"), n
    assert backend.seated == [0, 1, 2, 3, 4, 5]


def test_more_jobs_than_slots_reuse_the_slots(make):
    scheduler, backend = make(2)
    submitted = [scheduler.submit(job(prompt=(n, n + 1), seed=n)) for n in range(6)]
    assert [outcome(done) for done in submitted] == [("<1><2><3>", "length")] * 6
    assert {row[0] for rows in backend.rows for row in rows} == {0, 1}
    assert scheduler.stats() == {"generated_tokens": 18, "prompt_tokens_read": 12, "cached_prompt_tokens": 0,
                                 "restored_prompt_tokens": 0, "prompt_cache_bytes": 0, "preempted_sequences": 0,
                                 "completed_requests": 6, "cancelled_requests": 0, "queued_requests": 0, "busy_slots": 0}
    assert backend.freed == 6


def test_the_next_token_of_every_sequence_and_prompt_chunks_share_a_step(make):
    scheduler, backend = make(2)
    generating = scheduler.submit(job(prompt=(1, 2), max_tokens=ENDLESS))
    first_delta(generating)
    reading = scheduler.submit(job(prompt=range(10, 30), max_tokens=1))  # 20 prompt tokens, 8 fit in a batch
    assert outcome(reading) == ("<1>", "length")
    generating.cancel()
    generating.result()
    steps = [rows for rows in backend.rows if any(len(tokens) > 1 for _, _, tokens, _ in rows if tokens[0] >= 10)]
    assert len(steps) == 3  # 20 tokens read in chunks of 7, 7 and 6 next to the generating sequence's token
    assert [len(rows[0][2]) for rows in steps] == [1, 1, 1]
    assert [len(rows[1][2]) for rows in steps] == [7, 7, 6]
    assert [rows[1][3] for rows in steps] == [False, False, True]  # logits only after the last prompt token


def test_an_exact_prompt_samples_from_the_cached_slot_without_a_prefill(make):
    scheduler, backend = make(2)
    first = outcome(scheduler.submit(job(prompt=(5, 6, 7))))
    outcome(scheduler.submit(job(prompt=(8, 9))))
    decoded = len(backend.rows)
    again = scheduler.submit(job(prompt=(5, 6, 7)))
    assert outcome(again) == first
    assert backend.cached_samples == 1
    assert backend.cleared[-1] == (0, 3)  # slot 0 keeps the prompt's 3 cells, drops the old answer
    assert all(len(tokens) == 1 and position >= 3 for rows in backend.rows[decoded:] for _, position, tokens, _ in rows)


def prompt_reads(backend, since=0):
    """(slot, position, tokens) of every prompt chunk decoded since decode number `since` (rows of more than one
    token, or of a token the fake never samples: its samples are 1, 2, 3, ...)."""
    return [(seq_id, position, tokens) for rows in backend.rows[since:] for seq_id, position, tokens, _ in rows
            if len(tokens) > 1 or tokens[0] >= 10]


def test_a_next_turn_reads_only_what_the_slot_does_not_hold(make):
    """The slot holds the prompt and the answer's decoded tokens: a prompt that extends them is seated there and
    reads only its new tokens. A seeded one reuses only the cells read as a prompt (see jan_server.models.slots)."""
    scheduler, backend = make(2)
    turn = list(range(10, 20))
    assert outcome(scheduler.submit(job(prompt=turn))) == ("<1><2><3>", "length")  # <1> and <2> decoded, <3> not
    outcome(scheduler.submit(job(prompt=(30, 31))))  # the other slot
    decoded = len(backend.rows)
    follow_up = turn + [1, 2, 3, 40, 41]
    next_turn = scheduler.submit(job(prompt=follow_up))
    assert outcome(next_turn) == ("<1><2><3>", "length")
    assert prompt_reads(backend, decoded) == [(0, 12, [3, 40, 41])]
    assert next_turn.usage["prompt_tokens_details"] == {"cached_tokens": 12}
    assert backend.cleared[-1] == (0, 12)
    stats = scheduler.stats()
    assert (stats["prompt_tokens_read"], stats["cached_prompt_tokens"]) == (10 + 2 + 3, 12)
    decoded = len(backend.rows)
    seeded = follow_up + [1, 2, 50, 51]
    assert outcome(scheduler.submit(job(prompt=seeded, seed=5))) == ("<1><2><3>", "length")
    assert prompt_reads(backend, decoded) == [(0, 10, [1, 2, 3, 40, 41, 1, 2]), (0, 17, [50, 51])]  # the answers again
    decoded = len(backend.rows)
    assert outcome(scheduler.submit(job(prompt=seeded + [1, 2, 60, 61], seed=5))) == ("<1><2><3>", "length")
    assert prompt_reads(backend, decoded)[0][:2] == (0, len(seeded))  # all read as a prompt last time: kept


def test_a_conversation_evicted_from_its_slot_resumes_from_the_host_cache(make):
    """Another conversation takes the only slot: the first one's cells go to the host cache, and its next turn
    restores them and reads only its new tokens, as if it had kept the slot. Without a host cache it reads all."""
    turn = list(range(10, 40))
    follow_up = turn + [1, 2, 3, 90, 91]
    for cache_bytes, restored in ((10_000, 32), (0, 0)):
        scheduler, backend = make(1, n_batch=64, cache_bytes=cache_bytes)
        outcome(scheduler.submit(job(prompt=turn)))
        outcome(scheduler.submit(job(prompt=range(50, 80))))
        assert backend.saved[:1] == ([0] if cache_bytes else [])  # then, idle, the other's (test_kv_budget)
        decoded = len(backend.rows)
        resumed = scheduler.submit(job(prompt=follow_up))
        assert outcome(resumed) == ("<1><2><3>", "length")
        assert prompt_reads(backend, decoded) == [(0, restored, follow_up[restored:])]
        assert backend.restored == ([(0, b"cells of slot 0, save 1")] if cache_bytes else [])
        assert resumed.cached_tokens == scheduler.stats()["restored_prompt_tokens"] == restored
        assert scheduler.stats()["prompt_cache_bytes"] <= cache_bytes


def test_the_host_cache_keeps_within_its_budget_least_recently_used_out():
    cache = HostCache(250)
    state = bytes(60)  # and 8 bytes a token: 100 bytes an entry of 5 tokens
    for first in (10, 20, 30):
        cache.put("m", SlotCache(list(range(first, first + 5)), exact=5), state)
        assert cache.used <= cache.budget
    assert len(cache) == 2 and cache.best("m", [10, 11, 12], False) == (None, 0)  # 10 went first
    assert cache.best("m", [20, 21, 22], False)[1] == 3  # now 20 is the most recently used: 30 goes next
    cache.put("m", SlotCache(list(range(40, 45)), exact=5), state)
    assert cache.best("m", [30, 31], False) == (None, 0) and cache.best("m", [20, 21], False)[1] == 2
    assert cache.best("other model", [20, 21], False) == (None, 0)  # another model's cells never match
    cache.put("m", SlotCache(list(range(20, 30)), exact=10), state)  # covers the entry of 20..24: replaces it
    assert len(cache) == 2 and cache.used == 2 * 60 + 8 * 15
    assert not cache.wants("m", SlotCache(list(range(20, 25)), exact=5))
    cache.put("m", SlotCache(list(range(100)), exact=100), state)  # larger than the whole budget: not kept
    assert cache.best("m", [0, 1], False) == (None, 0) and cache.used <= cache.budget


def test_the_longest_shared_prefix_wins_else_the_least_recently_used_slot(make):
    scheduler, backend = make(3)
    for prompt in ([10, 11, 12, 13], [10, 20, 21, 23], [30, 31]):  # slots 0, 1 (slot 0 would lose 3 of 4), 2
        outcome(scheduler.submit(job(prompt=prompt, max_tokens=1)))
    decoded = len(backend.rows)
    outcome(scheduler.submit(job(prompt=[10, 20, 21, 24, 25], max_tokens=1)))  # shares 3 with slot 1, 1 with slot 0
    assert prompt_reads(backend, decoded) == [(1, 3, [24, 25])]
    decoded = len(backend.rows)
    outcome(scheduler.submit(job(prompt=[50, 51], max_tokens=1)))  # shares nothing: slot 0 was freed longest ago
    assert prompt_reads(backend, decoded) == [(0, 0, [50, 51])]


def test_a_slot_without_a_prefix_is_taken_next_to_a_busy_one(make):
    """llama.cpp decodes each run of consecutive sequence ids in a pass of its own: a job with nothing cached
    takes the least recently used slot next to a generating one (2, beside 3), not the least recently used (0)."""
    scheduler, backend = make(4)
    for prompt in ([10, 11], [20, 21], [30, 31]):  # slots 0, 1, 2: the least recently used is now 3, then 0
        outcome(scheduler.submit(job(prompt=prompt, max_tokens=1)))
    generating = scheduler.submit(job(prompt=(40, 41), max_tokens=ENDLESS))
    first_delta(generating)
    decoded = len(backend.rows)
    outcome(scheduler.submit(job(prompt=[50, 51], max_tokens=1)))
    generating.cancel()
    generating.result()
    assert [seq_id for seq_id, _, tokens in prompt_reads(backend, decoded) if len(tokens) > 1] == [2]


def test_a_prompt_a_busy_slot_holds_is_copied_from_it_not_read(make):
    scheduler, backend = make(2)
    shared = list(range(100, 100 + COPY_GAIN + 4))
    generating = scheduler.submit(job(prompt=shared, max_tokens=ENDLESS))
    first_delta(generating)
    decoded = len(backend.rows)
    assert outcome(scheduler.submit(job(prompt=shared + [40, 41, 42]))) == ("<1><2><3>", "length")
    generating.cancel()
    generating.result()
    assert backend.copied == [(0, 1)]
    assert (1, len(shared)) in backend.cleared  # the busy slot's answer is not kept
    assert [read for read in prompt_reads(backend, decoded) if read[0] == 1] == [(1, len(shared), [40, 41, 42])]
    assert scheduler.stats()["cached_prompt_tokens"] == len(shared)


def test_a_free_slot_passed_over_still_serves_its_prefix_by_a_copy(make):
    """A prompt sharing less than half of slot 0's last prompt goes to the empty slot (slot 0's conversation
    stays), which gets slot 0's cells of the shared part copied."""
    scheduler, backend = make(2)
    conversation = list(range(100, 100 + 3 * COPY_GAIN))
    outcome(scheduler.submit(job(prompt=conversation, max_tokens=1)))
    decoded = len(backend.rows)
    outcome(scheduler.submit(job(prompt=conversation[:COPY_GAIN] + [40, 41], max_tokens=1)))
    assert backend.copied == [(0, 1)]
    assert prompt_reads(backend, decoded) == [(1, COPY_GAIN, [40, 41])]
    outcome(scheduler.submit(job(prompt=conversation, max_tokens=1)))
    assert backend.cached_samples == 1  # slot 0 still holds its prompt and logits


def test_a_prefix_shorter_than_the_copy_gain_is_read(make):
    scheduler, backend = make(2)
    prefix = list(range(100, 100 + COPY_GAIN - 1))
    generating = scheduler.submit(job(prompt=prefix, max_tokens=ENDLESS))
    first_delta(generating)
    outcome(scheduler.submit(job(prompt=prefix + [40, 41])))
    generating.cancel()
    generating.result()
    assert backend.copied == []



def test_a_prompt_held_whole_without_its_logits_reads_its_last_tokens_again(make):
    scheduler, backend = make(1)
    outcome(scheduler.submit(job(prompt=[10, 11, 12, 13])))
    decoded = len(backend.rows)
    assert outcome(scheduler.submit(job(prompt=[10, 11, 12]))) == ("<1><2><3>", "length")
    assert backend.cleared[-1] == (0, 1)
    first = backend.rows[decoded]
    assert first == [(0, 1, [11, 12], True)]  # the last two prompt tokens again (never one alone), for the logits
    assert backend.cached_samples == 0


def test_no_prompt_chunk_is_a_lone_token(make):
    scheduler, backend = make(2)
    generating = scheduler.submit(job(prompt=(1, 2), max_tokens=ENDLESS))
    first_delta(generating)
    assert outcome(scheduler.submit(job(prompt=range(10, 18), max_tokens=1))) == ("<1>", "length")  # 8 = 7 + 1
    generating.cancel()
    generating.result()
    assert [tokens for rows in backend.rows for seq_id, _, tokens, _ in rows if seq_id == 1] == [list(range(10, 16)), [16, 17]]


def test_no_prompt_chunk_is_shorter_than_the_backends_min_chunk(make):
    """With flash attention a chunk under 64 tokens has other cells than a longer one: with min_chunk 3, a prompt
    of 9 is read as 6 + 3 beside a generating token (8 - 1 = 7 of room, but 7 + 2 would leave 2), and a seeded job held whole
    reads its last 3 again, its cells kept exact; a prompt of 2 reads whole, and its cells are not exact."""
    scheduler, backend = make(2)
    backend.min_chunk = 3
    generating = scheduler.submit(job(prompt=(1, 2), max_tokens=ENDLESS))
    first_delta(generating)
    assert outcome(scheduler.submit(job(prompt=range(10, 19), max_tokens=1, seed=5))) == ("<1>", "length")
    generating.cancel()
    generating.result()
    assert [tokens for rows in backend.rows for seq_id, _, tokens, _ in rows if seq_id == 1] == [list(range(10, 16)), [16, 17, 18]]
    decoded = len(backend.rows)
    outcome(scheduler.submit(job(prompt=range(10, 18), max_tokens=1, seed=5)))  # held whole, without its logits
    assert backend.rows[decoded] == [(1, 5, [15, 16, 17], True)]
    assert scheduler._free._slots[1].exact == 8
    outcome(scheduler.submit(job(prompt=(1, 2), max_tokens=1)))
    assert scheduler._free._slots[0].exact == 0


@pytest.mark.parametrize("n_batch", [smallest_n_batch(), 65], ids=["spec-minimum", "issue-27"])
@pytest.mark.parametrize("n_slots", [1, 3])
def test_every_prompt_is_read_in_chunks_of_min_chunk_whatever_n_batch(make, n_slots, n_batch):
    """With flash attention's min_chunk of 64, and beside a generating sequence in every other slot, a seeded prompt
    of any length is read (a step always has room to read: never a livelock) in chunks of 64 or more, or whole."""
    scheduler, backend = make(n_slots, delay=0.001, n_batch=n_batch, min_chunk=64)  # the delay bounds the rows kept if it stalls
    generating = [scheduler.submit(job(prompt=(n,), max_tokens=ENDLESS)) for n in range(n_slots - 1)]
    for live in generating:
        within_wait(lambda: first_delta(live))
    for length in range(1, 5 * 64, 3):
        prompt = [10**6 * length + n for n in range(length)]  # nothing shared with another prompt, nor a sample
        decoded = len(backend.rows)
        assert within_wait(lambda: outcome(scheduler.submit(job(prompt=prompt, max_tokens=1, seed=length)))) == ("<1>", "length"), length
        chunks = [tokens for rows in backend.rows[decoded:] for _, _, tokens, _ in rows if tokens[0] in prompt]
        assert sum(chunks, []) == prompt and all(len(chunk) >= min(64, length) for chunk in chunks), (length, chunks)
    for live in generating:
        live.cancel()


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_seeded_sequences_of_a_deterministic_model_are_named_to_the_backend(make, deterministic):
    """A seeded sequence's text must not depend on the rest of the batch (see LlamaBackend.decode), if the model
    is deterministic; else it batches like any other."""
    scheduler, backend = make(2)
    backend.exact = []
    decode = backend.decode
    backend.decode = lambda rows, exact: (backend.exact.append(set(exact)), decode(rows, exact))
    generating = scheduler.submit(job(prompt=(1, 2), max_tokens=ENDLESS))
    first_delta(generating)
    outcome(scheduler.submit(job(prompt=(3, 4), max_tokens=2, seed=1, deterministic=deterministic)))
    generating.cancel()
    generating.result()
    if deterministic:
        assert set() in backend.exact and {1} in backend.exact and all(exact <= {1} for exact in backend.exact)
    else:
        assert backend.exact and not any(backend.exact)


def test_a_group_reads_its_prompt_once_and_copies_it_to_every_choice(make):
    scheduler, backend = make(3)
    group = scheduler.submit_group([job(prompt=range(10, 22), seed=n) for n in range(3)])
    assert [outcome(choice) for choice in group] == [("<1><2><3>", "length")] * 3
    assert [tokens for _, _, tokens in prompt_reads(backend)] == [list(range(10, 18)), list(range(18, 22))]  # once
    assert backend.copied == [(0, 1), (0, 2)]
    assert backend.seated == [0, 1, 2]
    first_tokens = [rows for rows in backend.rows if all(tokens == [1] for _, _, tokens, _ in rows)][0]
    assert sorted((seq_id, position) for seq_id, position, _, _ in first_tokens) == [(0, 12), (1, 12), (2, 12)]
    assert scheduler.stats()["completed_requests"] == 3


def test_a_group_waits_for_a_slot_per_choice(make):
    scheduler, backend = make(2)
    running = scheduler.submit(job(prompt=(10,), seed=0, max_tokens=ENDLESS))
    first_delta(running)
    group = scheduler.submit_group([job(prompt=(20,), seed=n) for n in (1, 2)])
    after = scheduler.submit(job(prompt=(30,), seed=3))  # FIFO: it does not overtake the group for the free slot
    assert scheduler.stats()["queued_requests"] == 2
    running.cancel()
    assert [outcome(choice) for choice in group] == [("<1><2><3>", "length")] * 2
    assert outcome(after) == ("<1><2><3>", "length")
    assert backend.seated == [0, 1, 2, 3]


def test_a_cached_prompt_serves_every_choice_of_a_group(make):
    scheduler, backend = make(2)
    outcome(scheduler.submit(job(prompt=(10, 11))))
    group = scheduler.submit_group([job(prompt=(10, 11), seed=n) for n in range(2)])
    assert [outcome(choice) for choice in group] == [("<1><2><3>", "length")] * 2
    assert backend.cached_samples == 2 and backend.copied == [(0, 1)]


def test_choices_of_a_group_whose_prompt_was_never_read_end_with_it(make):
    scheduler, backend = make(3, delay=0.01)
    running = scheduler.submit(job(prompt=(10,), max_tokens=ENDLESS))
    first_delta(running)
    cancelled = threading.Event()
    group = [job(prompt=range(10, 200), seed=n) for n in range(2)]  # 190 tokens: many steps of 7
    for choice in group:
        choice.cancelled = cancelled
    scheduler.submit_group(group)
    deadline = time.monotonic() + WAIT
    while not any(seq_id == 1 for rows in backend.rows for seq_id, _, tokens, _ in rows if len(tokens) > 1):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    cancelled.set()  # the client left while the group's prompt was being read
    assert [outcome(choice) for choice in group] == [("", None)] * 2
    assert backend.copied == []
    running.cancel()
    assert scheduler.stats()["cancelled_requests"] == 3


def test_a_cancelled_live_job_frees_its_slot(make):
    scheduler, backend = make(1)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    waiting = scheduler.submit(job(seed=7))
    running.cancel()
    running.result()
    assert running.finish_reason is None
    assert outcome(waiting) == ("<1><2><3>", "length")
    assert scheduler.stats()["cancelled_requests"] == 1 and backend.freed == 2


def test_a_cancelled_waiting_job_is_never_seated(make):
    scheduler, backend = make(1)
    running = scheduler.submit(job(seed=0, max_tokens=ENDLESS))
    first_delta(running)
    gone = scheduler.submit(job(seed=1))
    after = scheduler.submit(job(seed=2))
    gone.cancel()
    running.cancel()
    assert outcome(gone) == ("", None)
    assert outcome(after) == ("<1><2><3>", "length")
    assert backend.seated == [0, 2]
    assert scheduler.stats()["cancelled_requests"] == 2


def test_a_job_whose_sampling_fails_fails_alone(make):
    scheduler, backend = make(3)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    broken = scheduler.submit(job(grammar="fail-sample"))
    unparsable = scheduler.submit(job(grammar="fail-sampler"))
    for failed in (broken, unparsable):
        error = error_of(failed)
        assert (error.status, error.code) == (500, "generation_failed")
        assert error.to_dict()["error"]["type"] == "server_error"
    produced = running.completion_tokens
    deadline = time.monotonic() + WAIT
    while running.completion_tokens < produced + 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert running.completion_tokens >= produced + 5  # the other sequence goes on
    assert outcome(scheduler.submit(job())) == ("<1><2><3>", "length")  # and the failed job's slot serves again
    running.cancel()
    running.result()
    assert backend.freed == 3


def test_a_job_whose_seating_fails_fails_alone(make):
    scheduler, backend = make(2)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    backend.fail_next_clear = True
    error = error_of(scheduler.submit(job()))
    assert (error.status, error.code) == (500, "generation_failed")
    assert outcome(scheduler.submit(job(max_tokens=2))) == ("<1><2>", "length")
    assert first_delta(running)  # still generating
    running.cancel()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the Crash, by design
def test_a_dead_scheduler_fails_its_waiters_and_refuses_new_jobs(make):
    scheduler, backend = make(1)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    waiting = scheduler.submit(job())
    backend.crash = True
    for failed in (running, waiting):
        error = error_of(failed)
        assert isinstance(error, ServerError) and (error.status, error.code) == (500, "scheduler_failed")
    scheduler.thread.join(WAIT)
    assert not scheduler.thread.is_alive()
    with pytest.raises(ServerError) as refused:
        scheduler.submit(job())
    assert refused.value.code == "scheduler_failed"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_reader_never_hangs_on_a_scheduler_that_died_without_a_word(make, monkeypatch):
    monkeypatch.setattr(jobs, "LIVENESS_POLL", 0.01)
    monkeypatch.setattr(Scheduler, "_end", lambda self, error, failed: None)  # as if even failing the jobs failed
    scheduler, backend = make(1)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    backend.crash = True
    scheduler.thread.join(WAIT)
    error = error_of(running)
    assert (error.status, error.code) == (500, "scheduler_failed")


def test_close_cancels_running_and_waiting_jobs_at_once(make):
    scheduler, backend = make(2, max_queued=32, delay=0.002)  # draining 34 x 2048 tokens would take over a minute
    running = [scheduler.submit(job(prompt=(n,), max_tokens=2048)) for n in range(2)]
    for live in running:
        first_delta(live)
    waiting = [scheduler.submit(job(prompt=(n,), max_tokens=2048)) for n in range(32)]
    started = time.monotonic()
    scheduler.close()
    assert time.monotonic() - started < 2
    for cancelled in running + waiting:
        error = error_of(cancelled)
        assert isinstance(error, UnavailableError) and (error.status, error.code) == (503, "model_stopping")
    assert backend.freed == 2
    with pytest.raises(ConflictError):
        scheduler.submit(job())


def test_close_waits_for_a_stuck_decode_only_so_long(make, monkeypatch):
    """A decode that never returns does not hold close() (and the model's lock its caller holds) for ever: close
    says the thread is still running, and the thread fails its job and ends once the decode returns."""
    monkeypatch.setattr(scheduler_module, "CLOSE_TIMEOUT", 0.01)
    scheduler, backend = make(1)
    decoding, release = stick(backend)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    try:
        assert decoding.wait(WAIT)
        assert within_wait(scheduler.close) is False and scheduler.thread.is_alive()
    finally:
        release.set()
    error = error_of(running)
    assert (error.status, error.code) == (503, "model_stopping")
    scheduler.thread.join(WAIT)
    assert not scheduler.thread.is_alive() and backend.freed == 1


def test_a_full_queue_is_refused_with_429_until_a_place_frees(make):
    scheduler, _ = make(1, max_queued=2)
    running = scheduler.submit(job(max_tokens=ENDLESS))
    first_delta(running)
    waiting = [scheduler.submit(job()) for _ in range(2)]
    with pytest.raises(RateLimitError) as refused:
        scheduler.submit(job())
    assert (refused.value.status, refused.value.retry_after, refused.value.code) == (429, 1, "queue_full")
    waiting[0].cancel()  # a client that left gives its place back
    taken = scheduler.submit(job())
    running.cancel()
    assert outcome(taken) == ("<1><2><3>", "length")
    assert scheduler.stats()["cancelled_requests"] == 2


def test_reading_a_job_waits_for_the_scheduler_without_polling_it_busily():
    """A job that is alive but silent keeps waiting (the liveness check does not end it)."""
    quiet = job()
    quiet.alive = lambda: True
    reader = threading.Thread(target=quiet.result, daemon=True)
    reader.start()
    reader.join(0.05)
    assert reader.is_alive()
    quiet.events.put(("done", "stop"))
    reader.join(WAIT)
    assert not reader.is_alive() and quiet.finish_reason == "stop"
