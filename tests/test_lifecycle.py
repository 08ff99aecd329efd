"""The model service in-process, on the real SmolLM2: the one table of defaults, the thread budget, `stopping`
while a runner closes, a stuck decode, and a chat racing a delete, a start racing the idle unload."""

from __future__ import annotations

import threading
import time

import pytest

from jan_server.errors import ApiError, NotFoundError
from jan_server.models import scheduler
from jan_server.models.lifecycle import ModelManager
from jan_server.models.loading import ThreadBudget, load_settings
from jan_server.models.registry import BUNDLED_FILE, BUNDLED_MODEL_ID, ModelRecord, Registry, bundled_weights
from jan_server.models.residency import Residency
from tests.fake_scheduler import WAIT, Crash, error_of, stick, within_wait

COPY = "smol-copy"


@pytest.fixture()
def models(tmp_path):
    """A manager with a budget of 3 threads, the bundled model and a copy of it (its weights symlinked)."""
    registry = Registry(tmp_path / "models")
    registry.directory(COPY).mkdir(parents=True)
    (registry.directory(COPY) / BUNDLED_FILE).symlink_to(bundled_weights())
    manager = ModelManager(registry, n_threads=3)
    yield manager
    manager.close()


def test_thread_budget_arithmetic():
    budget = ThreadBudget(4)
    assert budget.take() == 4  # alone: the whole budget
    assert budget.take() == 1  # nothing left: at least one
    budget.give(4)
    assert (budget.take(2), budget.take(), budget.take(8)) == (2, 1, 1)  # asked, what is left, at least one
    budget.give(2)
    budget.give(1)  # 2 of 4 in use
    assert budget.take(9) == 2  # never more than is left
    assert ThreadBudget().total >= 1  # every core by default


def test_load_settings_come_from_one_table():
    plain = ModelRecord(id="plain", manifest={}, directory=None, weights=None)
    assert load_settings(plain, {}) == {"ctx_len": 0, "ngl": 0, "n_batch": 512, "n_parallel": 8, "n_threads": None, "flash_attn": True,
                                        "deterministic": False, "rope_scaling": None, "rope_scale": None}
    zeroed = ModelRecord(id="zeroed", manifest={"settings": {"n_parallel": 0, "ctx_len": 1024, "n_threads": 2}}, directory=None, weights=None)
    assert load_settings(zeroed, {"n_batch": 64, "flash_attn": False}, deterministic=True) == {
        "ctx_len": 1024, "ngl": 0, "n_batch": 64, "n_parallel": 8, "n_threads": 2, "flash_attn": False, "deterministic": True,
        "rope_scaling": None, "rope_scale": None}  # the server's
    strict = ModelRecord(id="strict", manifest={"settings": {"deterministic": True}}, directory=None, weights=None)
    assert load_settings(strict, {})["deterministic"] and not load_settings(strict, {"deterministic": False}, deterministic=True)["deterministic"]


def test_running_models_share_the_thread_budget(models):
    assert models.start(BUNDLED_MODEL_ID)["metadata"]["n_threads"] == 3  # alone: the whole budget
    assert models.start(COPY)["metadata"]["n_threads"] == 1  # the rest of it, at least one
    assert models.describe(COPY)["metadata"]["n_threads"] == 1
    models.stop(BUNDLED_MODEL_ID)
    assert models.start(BUNDLED_MODEL_ID, {"n_threads": 1})["metadata"]["n_threads"] == 1  # what it asks for
    models.stop(COPY)
    assert models.start(COPY, {"n_threads": 8})["metadata"]["n_threads"] == 2  # at most what is left
    models.close()
    assert models.threads.used == 0


def test_stopping_shows_while_the_runner_closes(models):
    models.start(BUNDLED_MODEL_ID)
    runner = models.running(BUNDLED_MODEL_ID)
    closing, release, close = threading.Event(), threading.Event(), runner.close

    def held_close():
        closing.set()
        assert release.wait(60), "the test never let the close go on"
        return close()

    runner.close = held_close
    stopper = threading.Thread(target=models.stop, args=(BUNDLED_MODEL_ID,))
    stopper.start()
    try:
        assert closing.wait(60), "stop never reached the runner's close"
        assert models.describe(BUNDLED_MODEL_ID)["state"] == "stopping"
        assert models.list()["data"][0]["state"] == "stopping"
    finally:
        release.set()
        stopper.join(60)
    assert models.describe(BUNDLED_MODEL_ID)["state"] == "downloaded" and models.running(BUNDLED_MODEL_ID) is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the Crash, by design
def test_a_model_whose_scheduler_died_shows_the_error_and_the_next_request_loads_it_again(models):
    dying = models.runner_for(BUNDLED_MODEL_ID)

    def crash(rows, exact):
        raise Crash()

    dying.backend.decode = crash
    with pytest.raises(ApiError) as failed:
        dying.submit(dying.prepare([{"role": "user", "content": "Hi"}], {"max_tokens": 4})).result()
    assert (failed.value.status, failed.value.code) == (500, "scheduler_failed")
    described = models.describe(BUNDLED_MODEL_ID)
    assert described["state"] == "error" and "next request" in described["error"]
    fresh = models.runner_for(BUNDLED_MODEL_ID)
    assert fresh is not dying and dying._closed
    job = fresh.submit(fresh.prepare([{"role": "user", "content": "Hi"}], {"max_tokens": 4}))
    assert job.result() and job.finish_reason in ("stop", "length")
    assert models.describe(BUNDLED_MODEL_ID)["state"] == "running" and models.threads.used == 3


def test_a_chat_racing_a_delete_leaves_no_runner(models):
    """A chat that looks the model up while its delete is half done must not start it again."""
    models.start(COPY, {"n_threads": 1})
    chatting = models.runner_for(COPY)
    chatting.submit(chatting.prepare([{"role": "user", "content": "Hi"}], {"max_tokens": 8}))
    registry = models.registry
    removing, chat_looked, remove, look_up = threading.Event(), threading.Event(), registry.delete, registry.get

    def slow_delete(model_id):  # the runner is stopped by now; the folder is still there
        removing.set()
        assert chat_looked.wait(60), "the racing chat never looked the model up"
        remove(model_id)

    def get(model_id):
        if threading.current_thread().name == "racing-chat":
            chat_looked.set()
        return look_up(model_id)

    registry.delete, registry.get = slow_delete, get
    outcomes = {}

    def run(name, call):
        try:
            outcomes[name] = call()
        except ApiError as exc:
            outcomes[name] = exc

    deleter = threading.Thread(target=run, args=("delete", lambda: models.delete(COPY)))
    deleter.start()
    assert removing.wait(120), "the delete never got to removing the folder"
    racer = threading.Thread(target=run, args=("chat", lambda: models.runner_for(COPY)), name="racing-chat")
    racer.start()
    deleter.join(120)
    racer.join(120)
    assert outcomes["delete"] == {"id": COPY, "object": "model", "deleted": True}
    assert isinstance(outcomes["chat"], NotFoundError), outcomes["chat"]
    assert models.running(COPY) is None and COPY not in [m["id"] for m in models.list()["data"]]
    assert not list(models._locks)


def test_a_stuck_decode_leaves_the_model_in_error_and_its_lock_free(models, monkeypatch):
    """A stop never waits for ever on a decode (holding the model's lock): past scheduler.CLOSE_TIMEOUT the model
    shows `error`, and its context is freed once the decode returns."""
    monkeypatch.setattr(scheduler, "CLOSE_TIMEOUT", 0.01)
    runner = models.runner_for(BUNDLED_MODEL_ID)
    decoding, release = stick(runner.backend)
    job = runner.submit(runner.prepare([{"role": "user", "content": "Hi"}], {"max_tokens": 4}))
    try:
        assert decoding.wait(WAIT)
        stopped = within_wait(lambda: models.stop(BUNDLED_MODEL_ID))
        assert stopped["state"] == "error" and "did not stop" in stopped["error"], stopped
        assert not list(models._locks) and runner.backend.ctx is not None  # the decode still uses it
    finally:
        release.set()
    assert error_of(job).code == "model_stopping"
    runner.scheduler.thread.join(WAIT)
    deadline = time.monotonic() + WAIT
    while runner.backend.ctx is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.backend.ctx is None


def test_a_start_racing_the_idle_unload_waits_for_its_close(tmp_path):
    """The idle-unload thread closes a model under its lock, as stop does: a request meanwhile waits, then loads it
    with the whole thread budget (not a second copy beside the closing one, with the 1 thread that one left)."""
    manager = ModelManager(Registry(tmp_path / "models"), n_threads=3, loaded=Residency(idle_timeout=1))
    closing, release = threading.Event(), threading.Event()
    try:
        with manager.serving(BUNDLED_MODEL_ID) as idle:  # leased: not idle until the block ends
            close = idle.close

            def held_close():
                closing.set()
                assert release.wait(WAIT), "the test never let the close go on"
                return close()

            idle.close = held_close
        assert closing.wait(WAIT), "the idle model was never unloaded"
        started = []
        starter = threading.Thread(target=lambda: started.append(manager.runner_for(BUNDLED_MODEL_ID)))
        starter.start()
        deadline = time.monotonic() + WAIT  # until the start waits for the lock the unload holds, or has loaded
        while not started and manager._locks._locks.get(BUNDLED_MODEL_ID, [None, 0])[1] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        starter.join(WAIT)
        assert started[0] is not idle and started[0].load_settings["n_threads"] == 3
        assert idle._closed and idle.backend.ctx is None
    finally:
        release.set()
        manager.close()
