from __future__ import annotations

import os

import httpx
import openai
import pytest

from jan_server.models.prompt_cache import HostCache
from jan_server.models.scheduler import Scheduler
from tests import postgres
from tests.fake_scheduler import FakeBackend
from tests.live_server import PATIENT, LiveServer, openai_at


def pytest_generate_tests(metafunc):
    """A test (or module: `pytestmark`) marked `databases("sqlite", "postgresql")` runs on each kind named, if it
    uses the `database` fixture (the `server`, `api` and `database_url` fixtures do); unmarked, on SQLite."""
    marker = metafunc.definition.get_closest_marker("databases")
    if "database" in metafunc.fixturenames and marker is not None:
        metafunc.parametrize("database", marker.args, indirect=True, scope="session")


@pytest.fixture(scope="session")
def database(request) -> str:
    """`sqlite` or `postgresql`: the database kind the test runs on (SQLite unless its module asks for both)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL server whose `postgres` user may create databases (see tests/postgres.py)."""
    url = os.environ.get(postgres.URL_VARIABLE)
    if url:
        yield url
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must start PostgreSQL and set {postgres.URL_VARIABLE} (.ci/run does)")
    try:
        directory, url = postgres.start()
    except RuntimeError as exc:
        pytest.fail(f"{exc}, or set {postgres.URL_VARIABLE} to a server's URL")
    yield url
    postgres.stop(directory)


def new_database_url(database: str, request, tmp_path) -> str:
    """A new, empty database of the kind `database`: a SQLite file in `tmp_path`, or a database on the PostgreSQL."""
    if database == "postgresql":
        return postgres.create_database(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'jan.db'}"


@pytest.fixture()
def database_url(database, request, tmp_path) -> str:
    return new_database_url(database, request, tmp_path)


@pytest.fixture(scope="session")
def live_servers(request, tmp_path_factory):
    """live_servers(kind): the session's server on that kind of database, started on first use. pytest sets a
    parametrised session fixture up again whenever its parameter changes; the servers (and their loaded
    models) outlive that, until the session ends."""
    started: dict[str, LiveServer] = {}

    def live_server(database: str) -> LiveServer:
        if database not in started:
            data_dir = tmp_path_factory.mktemp(f"server-{database}") / "data"
            args = ("--database-url", new_database_url(database, request, data_dir.parent)) if database != "sqlite" else ()
            # deterministic: the tests of the seed's promise (the same text whatever runs beside it) run against it
            started[database] = LiveServer(data_dir, args=("--deterministic", *args)).start()  # SQLite: the default database, in the data dir
        return started[database]

    yield live_server
    for live in started.values():
        live.stop()


@pytest.fixture(scope="session")
def server(database, live_servers) -> LiveServer:
    """One real server (uvicorn + Connexion + a real database) shared by the session, per database kind, with
    --deterministic."""
    return live_servers(database)


@pytest.fixture()
def api(server) -> httpx.Client:
    """An HTTP client whose relative URLs are under the server's /v1."""
    with httpx.Client(base_url=server.api_url, timeout=PATIENT) as client:
        yield client


@pytest.fixture()
def openai_client(server) -> openai.OpenAI:
    """The official `openai` package pointed at the session's server."""
    with openai_at(server.api_url) as client:
        yield client


@pytest.fixture()
def make():
    """make(n_slots, max_queued=8, delay=0, n_batch=8, min_chunk=2, cache_bytes=0, cells=0) -> (scheduler, backend):
    a scheduler over tests/fake_scheduler.py's backend, with a host cache of `cache_bytes` and, given `cells`, that
    many cells shared by the slots; every scheduler is closed at the end."""
    made = []

    def make(n_slots, max_queued=8, delay=0.0, n_batch=8, min_chunk=2, cache_bytes=0, cells=0):
        backend = FakeBackend(delay, min_chunk, cells)
        scheduler = Scheduler(backend, model_id="fake", n_slots=n_slots, n_batch=n_batch, max_queued=max_queued,
                              cache=HostCache(cache_bytes), cache_key="fake")
        made.append(scheduler)
        return scheduler, backend

    yield make
    for scheduler in made:
        scheduler.close()
