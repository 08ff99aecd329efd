from __future__ import annotations

import httpx
import pytest

from tests.live_server import PATIENT, LiveServer

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
