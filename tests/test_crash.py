"""No lost writes: SIGKILL the server while clients write, restart it on the same data dir, and find
every write that was answered 2xx, in order; on SQLite and on PostgreSQL, and on SQLite in a database that passes
SQLite's integrity check."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests import postgres
from tests.live_server import PATIENT, LiveServer

CLIENTS = 6
#: Acknowledged writes after which the server is killed (the clients keep writing until it dies).
KILL_AFTER = 120


@dataclass
class Writer:
    """One client: appends numbered messages, in turn, to its own thread and to the shared one."""

    name: str
    own_thread: str
    shared_thread: str
    acked: dict[str, list[int]] = field(default_factory=dict)  # thread id -> seqs answered 2xx
    in_flight: dict[str, int] = field(default_factory=dict)  # thread id -> the seq last sent

    def run(self, api_url: str, progress: threading.Semaphore) -> None:
        self.acked[self.own_thread] = [0]  # the message the thread was created with
        with httpx.Client(base_url=api_url, timeout=PATIENT) as client:
            try:
                for seq in range(1, 10_000):
                    for thread_id in (self.own_thread, self.shared_thread):
                        self.in_flight[thread_id] = seq
                        response = client.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": f"{self.name} {seq}"})
                        response.raise_for_status()
                        self.acked.setdefault(thread_id, []).append(seq)
                        progress.release()
            except httpx.TransportError:
                return  # the server was killed


def create_thread(live: LiveServer, writer: str) -> str:
    body = {"metadata": {"writer": writer}, "messages": [{"role": "user", "content": f"{writer} 0"}]}
    response = httpx.post(f"{live.api_url}/threads", json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def all_messages(client: httpx.Client, thread_id: str) -> list[dict]:
    messages, after = [], None
    while True:
        params = {"limit": 100, "order": "asc", **({"after": after} if after else {})}
        page = client.get(f"/threads/{thread_id}/messages", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        messages += body["data"]
        if not body["has_more"]:
            return messages
        after = body["last_id"]


def text(message: dict) -> str:
    return message["content"][0]["text"]["value"]


@pytest.mark.databases(*postgres.BOTH)
def test_every_acknowledged_write_survives_sigkill(tmp_path, database_url):
    data_dir = tmp_path / "data"
    args = ("--database-url", database_url)
    live = LiveServer(data_dir, args=args).start()
    try:
        shared = httpx.post(f"{live.api_url}/threads", json={"title": "shared"}).json()["id"]
        writers = [Writer(f"w{i}", create_thread(live, f"w{i}"), shared) for i in range(CLIENTS)]
        progress = threading.Semaphore(0)
        threads = [threading.Thread(target=w.run, args=(live.api_url, progress)) for w in writers]
        for thread in threads:
            thread.start()
        for _ in range(KILL_AFTER):
            progress.acquire()
        live.kill()
        for thread in threads:
            thread.join()
    finally:
        live.kill()

    acked = sum(len(seqs) for w in writers for seqs in w.acked.values())
    assert acked >= KILL_AFTER

    restarted = LiveServer(data_dir, args=args).start()
    try:
        with httpx.Client(base_url=restarted.api_url, timeout=PATIENT) as client:
            assert client.get(f"/threads/{shared}").status_code == 200
            shared_messages = all_messages(client, shared)
            for writer in writers:
                thread = client.get(f"/threads/{writer.own_thread}")
                assert thread.status_code == 200 and thread.json()["metadata"] == {"writer": writer.name}
                check_writer(writer, writer.own_thread, all_messages(client, writer.own_thread))
                check_writer(writer, shared, shared_messages)
                for seq_id in (m["id"] for m in shared_messages if text(m).startswith(f"{writer.name} ")):
                    assert client.get(f"/threads/{shared}/messages/{seq_id}").status_code == 200
            # Nothing but the writers' messages is in the shared thread.
            assert all(text(m).split()[0] in {w.name for w in writers} for m in shared_messages)
    finally:
        restarted.stop()

    if make_url(database_url).get_backend_name() != "sqlite":
        return
    with sqlite3.connect(make_url(database_url).database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def check_writer(writer: Writer, thread_id: str, messages: list[dict]) -> None:
    """Every acknowledged seq is there once, in the order sent; at most the one in flight at the kill is extra."""
    seqs = [int(text(m).split()[1]) for m in messages if text(m).split()[0] == writer.name]
    acked = writer.acked.get(thread_id, [])
    assert seqs == sorted(set(seqs)), f"{writer.name}: duplicated or out of order in {thread_id}: {seqs}"
    assert set(acked) <= set(seqs), f"{writer.name}: lost {sorted(set(acked) - set(seqs))} in {thread_id}"
    extra = set(seqs) - set(acked)
    assert extra <= {writer.in_flight.get(thread_id)}, f"{writer.name}: never-sent writes {extra} in {thread_id}"
