"""Two replicas (two stores, each with its own engine and write lock, on one database) linking the same assistant
to the same thread at the same moment: both succeed, and the thread holds it once. On PostgreSQL, what replicas
share, an update-then-insert let both insert, and the second failed on the pair's unique constraint (a 500)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from jan_server.storage.store import Store
from tests import postgres

pytestmark = pytest.mark.databases(*postgres.BOTH)

#: Races run: each is two transactions started together, and without the upsert most of them collide.
ROUNDS = 20


@pytest.fixture()
def replicas(database_url):
    stores = [Store.open(database_url) for _ in range(2)]
    yield stores
    for store in stores:
        store.close()


def race(replicas, link) -> list[dict]:
    """`link(store, n)` run on both stores at once; what each returned."""
    barrier = threading.Barrier(len(replicas))

    def run(n: int) -> dict:
        barrier.wait()
        return link(replicas[n], n)

    with ThreadPoolExecutor(len(replicas)) as pool:
        return list(pool.map(run, range(len(replicas))))


def test_attaching_one_assistant_to_one_thread_on_both_replicas_at_once(replicas):
    first, second = replicas
    assistant = first.assistants.create({"model": "m"})["id"]
    for _ in range(ROUNDS):
        thread = first.threads.create()["id"]
        race(replicas, lambda store, n: store.threads.attach(thread, assistant, {"name": f"replica {n}"}))
        attached = second.threads.get(thread)["assistants"]
        assert len(attached) == 1 and attached[0]["name"] in ("replica 0", "replica 1")


def test_setting_a_threads_assistants_on_both_replicas_at_once(replicas):
    first, _ = replicas
    assistant = first.assistants.create({"model": "m"})["id"]
    for _ in range(ROUNDS):
        thread = first.threads.create()["id"]
        race(replicas, lambda store, n: store.threads.modify(thread, assistants=[{"assistant_id": assistant, "name": f"replica {n}"}]))
        attached = first.threads.get(thread)["assistants"]
        assert len(attached) == 1 and attached[0]["name"] in ("replica 0", "replica 1")
