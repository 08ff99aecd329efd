"""Two jan-server processes on one database, as replicas behind a load balancer run: writes through either are
seen by both, in one order, and none is lost; a background response runs on the one that took it, whatever the
other does. On PostgreSQL (what replicas share) and on one SQLite file."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import postgres
from tests.live_server import PATIENT, LiveServer, until
from tests.test_crash import all_messages, text
from tests.test_responses import MODEL

pytestmark = pytest.mark.databases(*postgres.BOTH)

WRITERS_PER_SERVER = 3
WRITES = 25
#: A background response that runs to its 2000 tokens: the format needs more (120 rows of at least 10 numbers).
ROWS = {"model": MODEL, "input": "List numbers.", "max_output_tokens": 2000, "background": True, "text": {"format": {
    "type": "json_schema", "name": "rows", "schema": {"type": "object", "required": ["rows"], "properties": {"rows": {
        "type": "array", "minItems": 120, "items": {"type": "array", "minItems": 10, "items": {"type": "integer"}}}}}}}}


@pytest.fixture()
def replicas(tmp_path, database_url):
    """Two servers started together, so both run the migrations at once on the empty database."""
    args = ("--database-url", database_url, "--n-threads", "1")
    servers = [LiveServer(tmp_path / f"data{n}", args=args) for n in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(LiveServer.start, servers))
    yield servers
    for server in servers:
        server.stop()


def test_writes_through_either_server_are_seen_by_both_in_one_order(replicas):
    first, second = replicas
    shared = httpx.post(f"{first.api_url}/threads", json={"title": "shared"}, timeout=PATIENT).json()["id"]
    acked: dict[str, list[int]] = {}
    failures: list[str] = []

    def write(name: str, server: LiveServer) -> None:
        acked[name] = []
        with httpx.Client(base_url=server.api_url, timeout=PATIENT) as client:
            for seq in range(WRITES):
                response = client.post(f"/threads/{shared}/messages", json={"role": "user", "content": f"{name} {seq}"})
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                acked[name].append(seq)

    writers = [threading.Thread(target=write, args=(f"{server.port}-{n}", server)) for server in replicas for n in range(WRITERS_PER_SERVER)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert failures == []

    listings = []
    for server in replicas:
        with httpx.Client(base_url=server.api_url, timeout=PATIENT) as client:
            listings.append(all_messages(client, shared))
    assert [m["id"] for m in listings[0]] == [m["id"] for m in listings[1]], "the two servers list different orders"
    written = [text(m).split() for m in listings[0]]
    assert len(written) == len(writers) * WRITES
    for name, seqs in acked.items():
        assert [int(seq) for writer, seq in written if writer == name] == seqs, f"{name}: lost or reordered writes"


def test_each_server_reads_what_the_other_just_wrote(replicas):
    first, second = replicas
    for writer, reader in ((first, second), (second, first)):
        thread = httpx.post(f"{writer.api_url}/threads", json={"metadata": {"by": str(writer.port)}}, timeout=PATIENT).json()
        message = httpx.post(f"{writer.api_url}/threads/{thread['id']}/messages", json={"role": "user", "content": "hi"}, timeout=PATIENT).json()
        assert httpx.get(f"{reader.api_url}/threads/{thread['id']}", timeout=PATIENT).json() == thread
        assert httpx.get(f"{reader.api_url}/threads/{thread['id']}/messages/{message['id']}", timeout=PATIENT).json() == message
        listed = httpx.get(f"{reader.api_url}/threads", params={"limit": 1}, timeout=PATIENT).json()
        assert listed["data"][0]["id"] == thread["id"]
    deleted = httpx.delete(f"{second.api_url}/threads/{thread['id']}", timeout=PATIENT)
    assert deleted.status_code == 200
    assert httpx.get(f"{first.api_url}/threads/{thread['id']}", timeout=PATIENT).status_code == 404


def status_of(server: LiveServer, response_id: str) -> str:
    return httpx.get(f"{server.api_url}/responses/{response_id}", timeout=PATIENT).json()["status"]


def started(server: LiveServer) -> str:
    """The id of a new background response on `server`, once it generates."""
    response_id = httpx.post(f"{server.api_url}/responses", json=ROWS, timeout=PATIENT).json()["id"]
    until(lambda: status_of(server, response_id) == "in_progress", f"{response_id} generates")
    return response_id


def jobs_ended(server: LiveServer) -> dict:
    """The model's request counters on `server`, once none of its jobs runs or waits."""
    def idle():
        metadata = httpx.get(f"{server.api_url}/models/{MODEL}", timeout=PATIENT).json()["metadata"]
        return metadata if not (metadata["busy_slots"] or metadata["queued_requests"]) else None
    return until(idle, f"the model on {server.port} is idle")


def test_a_background_response_survives_the_other_servers_restart_and_is_cancelled_through_it(replicas):
    first, second = replicas
    response_id = started(first)
    second.stop()
    second.start()  # a start fails only orphaned responses: this one's server beats
    assert status_of(second, response_id) == "in_progress"
    cancelled = httpx.post(f"{second.api_url}/responses/{response_id}/cancel", timeout=PATIENT).json()
    assert cancelled["status"] == "cancelled" and cancelled["usage"]["output_tokens"] < 2000  # stopped by the first
    assert jobs_ended(first)["cancelled_requests"] == 1
    assert status_of(first, response_id) == "cancelled"


@pytest.mark.parametrize("through", ["its server", "the other"])
def test_deleting_a_running_background_response_stops_it_and_leaves_it_deleted(replicas, through):
    first, second = replicas
    response_id = started(first)
    deleter = first if through == "its server" else second
    assert httpx.delete(f"{deleter.api_url}/responses/{response_id}", timeout=PATIENT).status_code == 200
    assert jobs_ended(first)["cancelled_requests"] == 1  # stopped, at once or at the next heartbeat
    first.stop()  # its background threads have ended: whatever they write is written
    assert httpx.get(f"{second.api_url}/responses/{response_id}", timeout=PATIENT).status_code == 404
    assert httpx.get(f"{second.api_url}/responses/{response_id}/input_items", timeout=PATIENT).status_code == 404


def test_a_crashed_servers_background_response_is_failed_by_the_other_once_orphaned(replicas):
    first, second = replicas
    response_id = started(first)
    first.kill()
    until(lambda: status_of(second, response_id) == "failed", f"{response_id} failed")  # once its heartbeat is stale (20 s)
    failed = httpx.get(f"{second.api_url}/responses/{response_id}", timeout=PATIENT).json()
    assert "server stopped" in failed["error"]["message"]
