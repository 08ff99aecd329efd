"""KV memory as one budget (jan_server.models.kv, .room): slots that share their cells, against the fake backend
(which refuses a decode with no room for its tokens) and the real model. The fake samples 1, 2, 3, ... per
sequence, so a preempted sequence that resumed anywhere but where it stopped would skip or repeat a number."""

from __future__ import annotations

import threading

import pytest

from jan_server.models.kv import MIN_CTX, Cells, check_fits, default_context
from jan_server.models.lifecycle import ModelManager
from jan_server.models.prompt_cache import HostCache
from jan_server.models.registry import BUNDLED_MODEL_ID, Registry
from tests.fake_scheduler import job, outcome
from tests.live_server import until


def counting(n: int) -> str:
    return "".join(f"<{i}>" for i in range(1, n + 1))


def test_cells_count_what_llama_cpp_holds():
    cells = Cells(10)
    cells.grow(0, 0, 4)
    cells.copy(0, 1)  # shared, not new
    assert cells.free == 6 and cells.held(1) == 4 and cells.own(0) == 0
    cells.grow(1, 2, 3)  # the copy diverges at position 2
    assert cells.free == 3 and cells.held(1) == 5 and cells.own(0) == 2
    cells.clear(0, 0)
    assert cells.free == 5  # sequence 1 still holds positions 0 and 1 of the shared cells
    cells.clear(1, 0)
    cells.restore(2, 7)
    assert cells.free == 3


def test_the_default_context_is_the_trained_one_where_it_fits():
    assert default_context(8192, 1000, 1, available=10**9) == 8192
    assert default_context(8192, 1000, 8, available=10**8) == 4096  # 8 copies of 4,096 cells: 32.8 MB of 50
    assert default_context(8192, 10**6, 8, available=10**8) == MIN_CTX  # never below
    assert default_context(1024, 10**6, 8, available=10**8) == 1024  # nor above the trained one
    check_fits(4096, 1000, 8, available=10**8)
    with pytest.raises(ValueError, match="needs 312 MiB, more than the 95 MiB"):
        check_fits(4096, 10_000, 8, available=10**8)


def test_an_idle_slots_cells_give_way_to_a_long_prompt_and_come_back_from_the_host_cache(make):
    scheduler, backend = make(2, n_batch=64, cells=48, cache_bytes=10_000)
    first = list(range(100, 120))
    assert outcome(scheduler.submit(job(prompt=first, max_tokens=3))) == (counting(3), "length")  # slot 0: 22 cells
    long = list(range(200, 230))  # 30 tokens + 2 generated: more than the 26 cells left
    assert outcome(scheduler.submit(job(prompt=long, max_tokens=3))) == (counting(3), "length")
    assert backend.saved[:1] == [0] and backend.cells.held(0) == 0
    again = scheduler.submit(job(prompt=first + [1, 2, 3, 50]))
    assert outcome(again) == (counting(3), "length")
    assert again.cached_tokens == scheduler.stats()["restored_prompt_tokens"] == 22


@pytest.mark.parametrize("cache_bytes", [10_000, 0])
def test_a_seated_job_vacates_the_idle_slots_whose_cells_a_cache_keeps(make, cache_bytes):
    """Room enough for all, yet the idle slots' cells go to the host cache as a job is seated (every read attends
    over them); what it shares with one is copied first. Without a cache to keep them, they stay."""
    scheduler, backend = make(3, n_batch=64, cells=200, cache_bytes=cache_bytes)
    first, second = list(range(100, 120)), list(range(200, 240))
    for prompt in (first, second):
        assert outcome(scheduler.submit(job(prompt=prompt, max_tokens=3))) == (counting(3), "length")
    assert (backend.cells.held(0), backend.cells.held(1)) == ((0, 42) if cache_bytes else (22, 42))
    shared = scheduler.submit(job(prompt=second[:18] + [7, 8, 9], max_tokens=3))  # another slot, slot 1's 18 copied
    assert outcome(shared) == (counting(3), "length") and shared.cached_tokens == 18
    assert backend.cells.held(1) == (0 if cache_bytes else 42)
    again = scheduler.submit(job(prompt=first + [1, 2, 3, 50]))
    assert outcome(again) == (counting(3), "length")
    assert again.cached_tokens == 22 and scheduler.stats()["restored_prompt_tokens"] == (22 if cache_bytes else 0)


def test_an_idle_scheduler_saves_its_slots_cells_ahead_so_a_seated_job_only_clears_them(make):
    """With nothing to do, the scheduler saves each idle slot's cells to the host cache, keeping them; a job seated
    later vacates the slot without saving it again, and the conversation's next turn restores the saved cells."""
    scheduler, backend = make(3, n_batch=64, cells=200, cache_bytes=10_000)
    first = list(range(100, 120))
    assert outcome(scheduler.submit(job(prompt=first, max_tokens=3))) == (counting(3), "length")
    until(lambda: backend.saved == [0], "the idle slot's cells are saved", timeout=30)
    assert backend.cells.held(0) == 22  # kept in the slot too
    assert outcome(scheduler.submit(job(prompt=list(range(200, 240)), max_tokens=3))) == (counting(3), "length")
    assert backend.cells.held(0) == 0  # vacated, not saved again
    until(lambda: backend.saved == [0, 1], "the other slot's cells are saved", timeout=30)
    again = scheduler.submit(job(prompt=first + [1, 2, 3, 50]))
    assert outcome(again) == (counting(3), "length")
    assert again.cached_tokens == scheduler.stats()["restored_prompt_tokens"] == 22


@pytest.mark.parametrize("cache_bytes", [10_000, 0])
def test_generations_that_outgrow_the_cells_preempt_the_newest_and_all_finish(make, cache_bytes):
    """Three sequences of 12 prompt tokens and 20 generated share 64 cells: the newest give way (their cells to
    the host cache) and resume where they stopped, restored when the cache kept them, else read again."""
    scheduler, backend = make(3, n_batch=64, cells=64, cache_bytes=cache_bytes)
    jobs = [scheduler.submit(job(prompt=list(range(100 * i + 10, 100 * i + 22)), max_tokens=20)) for i in range(3)]
    assert [outcome(each) for each in jobs] == [(counting(20), "length")] * 3
    stats = scheduler.stats()
    assert stats["preempted_sequences"] >= 1
    assert (stats["restored_prompt_tokens"] > 0) == bool(cache_bytes)
    assert backend.cells.free + sum(backend.cells.held(slot) for slot in range(3)) == 64


def test_the_choices_of_one_request_share_its_prompts_cells_and_give_way_like_any(make):
    scheduler, backend = make(3, n_batch=64, cells=56, cache_bytes=10_000)
    prompt = list(range(100, 124))
    choices = scheduler.submit_group([job(prompt=prompt, max_tokens=20) for _ in range(3)])
    assert [outcome(each) for each in choices] == [(counting(20), "length")] * 3  # 24 + 3 x 19 > 56 cells
    assert scheduler.stats()["preempted_sequences"] >= 1


def test_a_prompt_half_read_gives_way_to_a_generating_sequence_and_resumes(make):
    """Two 15-token prompts in 20 cells: the second reads what cells the first leaves, then gives them back when
    the first generates, and later reads the rest of its prompt."""
    scheduler, _ = make(2, n_batch=10, cells=20, cache_bytes=10_000)
    jobs = [scheduler.submit(job(prompt=list(range(start, start + 15)), max_tokens=3)) for start in (100, 200)]
    assert [outcome(each) for each in jobs] == [(counting(3), "length")] * 2
    assert scheduler.stats()["preempted_sequences"] >= 1


def test_a_cancelled_preempted_sequence_ends_without_resuming(make):
    scheduler, _ = make(2, n_batch=64, cells=16, delay=0.002)
    first = scheduler.submit(job(prompt=[1, 2, 3, 4], max_tokens=11))
    second = scheduler.submit(job(prompt=[5, 6, 7, 8], max_tokens=11))
    while not scheduler.stats()["preempted_sequences"]:
        pass
    second.cancel()
    assert outcome(first) == (counting(11), "length")
    assert outcome(second)[1] is None


# The real model: one context of shared cells.

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    manager = ModelManager(Registry(tmp_path_factory.mktemp("models")), n_threads=1, max_queued_requests=8, prompt_cache=HostCache(512 * 2**20))
    yield manager
    manager.close()


def start(models, **settings):
    running = models.running(BUNDLED_MODEL_ID)
    if running is not None and any(running.load_settings.get(key) != value for key, value in settings.items()):
        models.stop(BUNDLED_MODEL_ID)
    models.start(BUNDLED_MODEL_ID, settings)
    return models.running(BUNDLED_MODEL_ID)


def chat(runner, content: str, **parameters):
    return runner.submit(runner.prepare([{"role": "user", "content": content}], {"temperature": 0, **parameters}))


def test_by_default_the_slots_share_the_trained_context(models):
    runner = start(models)
    assert runner.n_ctx == runner.load_settings["ctx_len"] == 8192 and runner.backend.cells.size == 8192


def test_a_prompt_longer_than_a_slots_former_share_is_served_beside_other_conversations(models):
    """With 4 slots of 1,024 shared cells, a 700-token prompt (over the 256 an even split would give) is read
    while three other conversations keep their cells, evicting only what it needs."""
    runner = start(models, ctx_len=1024, n_parallel=4)
    short = [chat(runner, f"Say the number {n}.", max_tokens=8) for n in range(3)]
    for each in short:
        each.result()
    long = chat(runner, "Repeat: " + "apple pear " * 330, max_tokens=8)
    assert long.result() and long.finish_reason in ("stop", "length") and len(long.prompt_tokens) > 1024 // 4 * 2


def test_long_generations_beyond_the_cells_all_finish_with_their_text_alone(models):
    """Three greedy generations of 300 tokens in 512 shared cells: they cannot all hold their cells, so the newest
    are preempted and resume from the host cache where they stopped, each with the very text it gives alone. (A
    batch of a unified cache can move a near tie, as any batch can: counting has none, and shows a skipped or
    repeated token.)"""
    runner = start(models, ctx_len=512, n_parallel=3)
    prompts = [", ".join(str(n) for n in range(first, first + 12)) + "," for first in (1, 300, 7000)]

    def count(prompt):
        return runner.submit(runner.prepare_text(prompt, {"temperature": 0, "max_tokens": 300}))

    alone = [count(prompt).result() for prompt in prompts]
    before = runner.scheduler.stats()
    jobs = [count(prompt) for prompt in prompts]
    texts = [None] * 3
    readers = [threading.Thread(target=lambda i=i: texts.__setitem__(i, jobs[i].result())) for i in range(3)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    stats = runner.scheduler.stats()
    assert stats["preempted_sequences"] > before["preempted_sequences"]
    assert stats["restored_prompt_tokens"] > before["restored_prompt_tokens"]
    assert texts == alone and all(len(job.prompt_tokens) + job.completion_tokens > 512 // 3 for job in jobs)
