from __future__ import annotations

import httpx
import openai
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


@pytest.fixture()
def openai_client(server) -> openai.OpenAI:
    """The official `openai` package pointed at the server (no retries: a failure shows at once)."""
    with openai.OpenAI(api_key="x", base_url=server.api_url, max_retries=0, timeout=PATIENT) as client:
        yield client
