"""How the responses service stores a response, in-process on the real model and a SQLite store: written once and
then only updated, nothing stored for a refused request, a failure to store the end stored as `failed`, and the
model leased until the job is submitted. (Replicas sharing a database: tests/test_replicas.py.)"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, update

from jan_server.errors import NotFoundError, RateLimitError
from jan_server.models.lifecycle import ModelManager
from jan_server.models.registry import BUNDLED_MODEL_ID, Registry
from jan_server.models.residency import Residency
from jan_server.responses import service as responses_service
from jan_server.responses.service import ResponseService
from jan_server.storage.responses import UNFINISHED
from jan_server.storage.store import Store
from jan_server.storage.tables import responses
from tests.test_responses import ENDLESS, SETTLE_S

#: A background request whose grammar needs at least 240 tokens to finish.
LONG = {"model": BUNDLED_MODEL_ID, "input": "List numbers.", "text": {"format": ENDLESS}, "max_output_tokens": 2000, "background": True}


def open_service(tmp_path, **manager) -> ResponseService:
    models = ModelManager(Registry(tmp_path / "models"), n_threads=1, **manager)
    return ResponseService(Store.open(f"sqlite:///{tmp_path / 'jan.db'}"), models)


@pytest.fixture()
def service(tmp_path):
    service = open_service(tmp_path)
    yield service
    close(service)


def close(service: ResponseService) -> None:
    service.models.close()
    service.close()
    service.store.close()


def stored_count(service: ResponseService) -> int:
    with service.store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(responses)).scalar_one()


def settled(service: ResponseService, response_id: str) -> dict:
    """The stored response once its background thread ended."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        with service._lock:
            running = service._background.get(response_id)
        if running is None:
            return service.store.responses.get(response_id)
        running[1].join(1)
    raise AssertionError(f"{response_id} still runs")


def test_a_refused_request_stores_nothing(tmp_path):
    service = open_service(tmp_path, max_queued_requests=0)  # the model's queue refuses every job: a 429
    try:
        with pytest.raises(RateLimitError):
            service.create({"model": BUNDLED_MODEL_ID, "input": "Hi", "max_output_tokens": 4, "background": True})
        assert stored_count(service) == 0
    finally:
        close(service)


def test_a_response_deleted_while_it_runs_stops_and_is_not_written_back(service):
    generation = service.create(LONG)  # stored queued; its thread has not started
    service.store.responses.delete(generation.id)  # as another replica deletes it
    service.background(generation)
    with pytest.raises(NotFoundError):
        settled(service, generation.id)
    assert generation.job.finish_reason is None, "generation went on to its end"  # cancelled at its first update
    assert generation.job.completion_tokens < 240  # the grammar's least to finish
    assert stored_count(service) == 0


def test_a_response_whose_end_cannot_be_stored_is_stored_failed(service):
    conversation = service.store.conversations.create()
    generation = service.create({"model": BUNDLED_MODEL_ID, "input": "Hi", "max_output_tokens": 4, "background": True,
                                 "conversation": conversation["id"]})
    service.store.conversations.delete(conversation["id"])  # before it ends: appending to it fails
    service.background(generation)
    failed = settled(service, generation.id)
    assert failed["status"] == "failed" and conversation["id"] in failed["error"]["message"]


def test_the_model_is_leased_until_the_job_is_submitted(tmp_path, monkeypatch):
    """An idle reaper that runs every few milliseconds does not stop the model while the job is prepared (it would
    be a 409 model_stopping, or the job cancelled)."""
    service = open_service(tmp_path, loaded=Residency(idle_timeout=0.01))
    prepare = responses_service.prepare

    def reaper_meanwhile(runner, *args):
        deadline = time.monotonic() + 1  # some 400 rounds of the reaper
        while service.models.running(BUNDLED_MODEL_ID) is runner and time.monotonic() < deadline:
            time.sleep(0.01)
        return prepare(runner, *args)

    monkeypatch.setattr(responses_service, "prepare", reaper_meanwhile)
    try:
        generation = service.create({"model": BUNDLED_MODEL_ID, "input": "Hi", "max_output_tokens": 4, "background": True})
        service.background(generation)
        done = settled(service, generation.id)
        assert done["status"] in ("completed", "incomplete"), done["error"]
    finally:
        close(service)


def test_an_orphaned_response_is_failed_when_read_and_a_live_ones_is_not(service):
    """A response whose owner stopped beating long ago is failed when read; the one this service runs is not."""
    generation = service.create(LONG)
    service.background(generation)
    service.store.responses.insert({**service.get(generation.id), "id": "resp_orphan"}, owner="server_gone")
    assert service.get("resp_orphan")["status"] in UNFINISHED  # its heartbeat is fresh: its owner may be alive
    with service.store.engine.begin() as connection:
        connection.execute(update(responses).values(heartbeat=time.time() - responses_service.STALE_S - 1))  # both
    orphan = service.get("resp_orphan")
    assert orphan["status"] == "failed" and orphan["error"] == responses_service.INTERRUPTED
    service.beat()
    assert service.get(generation.id)["status"] in UNFINISHED
    assert service.cancel(generation.id)["status"] == "cancelled"
