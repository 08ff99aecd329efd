from __future__ import annotations

import httpx
import pytest

from tests.live_server import LiveServer

#: How long a test's client waits for the server. Generous on purpose: the tests share a small machine with
#: other work, and under load one chat on the bundled model takes many times its usual second (a 60 s read
#: limit failed an ordinary chat so). Only a hung server should ever reach these limits.
PATIENT = httpx.Timeout(connect=60, read=600, write=60, pool=600)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    """One real server (uvicorn + Connexion + a real SQLite file) shared by the session."""
    live = LiveServer(tmp_path_factory.mktemp("server") / "data").start()
    yield live
    live.stop()


@pytest.fixture()
def api(server) -> httpx.Client:
    """An HTTP client whose relative URLs are under the server's /v1."""
    with httpx.Client(base_url=server.api_url, timeout=PATIENT) as client:
        yield client
