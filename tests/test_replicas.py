"""Two jan-server processes on one database, as replicas behind a load balancer run: writes through either are
seen by both, in one order, and none is lost. On PostgreSQL (what replicas share) and on one SQLite file."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import postgres
from tests.live_server import PATIENT, LiveServer
from tests.test_crash import all_messages, text

pytestmark = pytest.mark.databases(*postgres.BOTH)

WRITERS_PER_SERVER = 3
WRITES = 25


@pytest.fixture()
def replicas(tmp_path, database_url):
    """Two servers started together, so both run the migrations at once on the empty database."""
    servers = [LiveServer(tmp_path / f"data{n}", args=("--database-url", database_url)) for n in (1, 2)]
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
