"""Disconnects (jan_server.web.disconnect): the watcher's event, and `until_disconnect`, the one helper every
stream goes through, which ends a stream when its client leaves and runs its cancel callback however it ends."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jan_server.web.disconnect import SCOPE_KEY, DisconnectWatcher, until_disconnect


class Producer:
    """A stream's producer that records how far it was pulled and whether it was closed."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None):
        self.chunks, self.fail_at = chunks, fail_at
        self.pulled = 0
        self.closed = False

    def __iter__(self):
        try:
            for n, chunk in enumerate(self.chunks):
                if n == self.fail_at:
                    raise RuntimeError("the producer failed")
                self.pulled += 1
                yield chunk
        finally:
            self.closed = True


def test_a_finished_stream_passes_every_chunk_and_cancels_once():
    cancels = []
    assert list(until_disconnect(iter([b"a", b"b"]), threading.Event(), lambda: cancels.append(1))) == [b"a", b"b"]
    assert cancels == [1]


def test_a_client_gone_ends_the_stream_before_the_next_chunk():
    gone, cancels, producer = threading.Event(), [], Producer([b"a", b"b", b"c", b"d"])
    stream = until_disconnect(iter(producer), gone, lambda: cancels.append(1))
    assert next(stream) == b"a"
    gone.set()
    assert list(stream) == []
    assert (producer.pulled, producer.closed, cancels) == (1, True, [1])  # not asked for another


def test_a_failing_producer_still_cancels():
    cancels = []
    stream = until_disconnect(iter(Producer([b"a", b"b"], fail_at=1)), threading.Event(), lambda: cancels.append(1))
    with pytest.raises(RuntimeError):
        list(stream)
    assert cancels == [1]


def test_a_response_closed_by_the_server_cancels_and_closes_the_producer():
    cancels, producer = [], Producer([b"a", b"b"])
    stream = until_disconnect(iter(producer), threading.Event(), lambda: cancels.append(1))
    assert next(stream) == b"a"
    stream.close()
    assert (producer.closed, cancels) == (True, [1])


def test_the_watcher_sets_the_event_when_the_client_leaves_after_its_body():
    seen = {}

    async def app(scope, receive, send):
        assert (await receive())["type"] == "http.request"
        seen["event"] = scope[SCOPE_KEY]
        seen["before"] = scope[SCOPE_KEY].is_set()
        # Reason for the limit: the disconnect below is delivered at once; 10 s only bounds a broken watcher.
        for _ in range(1000):
            if scope[SCOPE_KEY].is_set():
                break
            await asyncio.sleep(0.01)

    async def run():
        messages = asyncio.Queue()
        await messages.put({"type": "http.request", "body": b"{}", "more_body": False})
        await messages.put({"type": "http.disconnect"})
        watcher = DisconnectWatcher(app, watched=lambda scope: True)
        await watcher({"type": "http", "path": "/v1/chat/completions"}, messages.get, None)

    asyncio.run(run())
    assert (seen["before"], seen["event"].is_set()) == (False, True)


def test_unwatched_requests_get_no_event():
    seen = {}

    async def app(scope, receive, send):
        seen["watched"] = SCOPE_KEY in scope

    asyncio.run(DisconnectWatcher(app, watched=lambda scope: False)({"type": "http", "path": "/v1/threads"}, None, None))
    assert seen == {"watched": False}
