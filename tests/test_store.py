"""The store on a real SQLite file and a real PostgreSQL database: ordering within one second, cursors, cascades,
migrations, rules."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import create_engine, inspect, text

from jan_server.errors import ConflictError, InvalidRequestError, NotFoundError
from jan_server.storage.paging import Page
from jan_server.storage.store import Store
from tests import postgres

pytestmark = pytest.mark.databases(*postgres.BOTH)


@pytest.fixture()
def store(database_url):
    opened = Store.open(database_url)
    yield opened
    opened.close()


def count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["data"]]


def test_open_migrates_to_head_in_wal_mode(tmp_path):
    path = tmp_path / "jan.db"
    Store.open(f"sqlite:///{path}").close()
    Store.open(f"sqlite:///{path}").close()  # a second open finds nothing to do
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"threads", "messages", "assistants", "thread_assistants", "responses", "response_items", "conversations", "conversation_items"} <= tables


def test_open_waits_while_another_process_writes_the_new_file_before_it_is_in_wal_mode(tmp_path):
    """A write in progress on a file still in rollback mode (another server switching it to WAL, or migrating):
    SQLite refuses the switch at once, without its busy handler. The store waits for the lock, as for any other."""
    path = tmp_path / "jan.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (a)")
    writer.execute("BEGIN")
    writer.execute("INSERT INTO other VALUES (1)")  # a RESERVED lock on a rollback-mode file
    threading.Timer(0.5, writer.execute, ("COMMIT",)).start()
    Store.open(f"sqlite:///{path}").close()
    writer.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_open_migrates_any_database_to_head(database_url):
    """Alembic's migrations on each kind of database (PostgreSQL too), run twice as a restart would."""
    Store.open(database_url).close()
    Store.open(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [("0005",)]
        assert {"threads", "messages", "assistants", "thread_assistants", "responses", "conversations", "vector_stores",
                "vector_store_files", "vector_store_chunks"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_list_order_breaks_created_at_ties_by_insertion(store):
    created = [store.threads.create(metadata={"n": str(n)})["id"] for n in range(7)]
    assert ids(store.threads.list(Page(limit=100, order="asc"))) == created
    assert ids(store.threads.list(Page(limit=100, order="desc"))) == created[::-1]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_after_and_before_walk_the_list_both_ways(store, order):
    thread = store.threads.create()["id"]
    for n in range(5):
        store.messages.create(thread, {"role": "user", "content": str(n)})
    everything = ids(store.messages.list(thread, Page(limit=100, order=order)))

    first = store.messages.list(thread, Page(limit=2, order=order))
    second = store.messages.list(thread, Page(limit=2, order=order, after=first["last_id"]))
    third = store.messages.list(thread, Page(limit=2, order=order, after=second["last_id"]))
    assert ids(first) + ids(second) + ids(third) == everything
    assert [first["has_more"], second["has_more"], third["has_more"]] == [True, True, False]

    back = store.messages.list(thread, Page(limit=2, order=order, before=third["first_id"]))
    assert ids(back) == ids(second) and back["has_more"] is True
    between = store.messages.list(thread, Page(limit=100, order=order, after=everything[0], before=everything[3]))
    assert ids(between) == everything[1:3]


def test_unknown_cursor_is_a_404_naming_it(store):
    """A cursor not in the list (deleted meanwhile, or another list's) must not silently restart from the top."""
    other = store.threads.create()["id"]
    thread = store.threads.create()["id"]
    with pytest.raises(NotFoundError) as raised:
        store.messages.list(thread, Page(after="msg_missing"))
    assert (raised.value.param, raised.value.code) == ("after", "cursor_not_found")
    with pytest.raises(NotFoundError) as raised:
        store.threads.list(Page(before="thread_missing"))
    assert (raised.value.param, raised.value.code) == ("before", "cursor_not_found")
    message = store.messages.create(other, {"role": "user", "content": "elsewhere"})
    with pytest.raises(NotFoundError) as raised:
        store.messages.list(thread, Page(after=message["id"]))  # a cursor from another thread's list
    assert raised.value.code == "cursor_not_found"
    with pytest.raises(NotFoundError) as raised:
        store.messages.list("thread_missing", Page(after=message["id"]))
    assert raised.value.code == "thread_not_found"  # a missing thread is named before any cursor


@pytest.mark.parametrize("limit", [0, 101])
def test_limit_out_of_range(limit):
    with pytest.raises(InvalidRequestError) as raised:
        Page(limit=limit)
    assert raised.value.param == "limit"


@pytest.mark.parametrize(
    "metadata",
    [{f"k{n}": "v" for n in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}, {"k": 1}],
)
def test_metadata_rules(store, metadata):
    with pytest.raises(InvalidRequestError) as raised:
        store.threads.create(metadata=metadata)
    assert raised.value.param == "metadata"


def test_metadata_at_the_limits_is_kept(store):
    metadata = {f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)}
    thread = store.threads.create(metadata=metadata)
    assert store.threads.get(thread["id"])["metadata"] == metadata


def test_content_parts_become_text_parts(store):
    thread = store.threads.create(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    (message,) = store.threads.with_messages(thread["id"])["messages"]
    assert message["content"] == [
        {"type": "text", "text": {"value": "a", "annotations": []}},
        {"type": "text", "text": {"value": "b", "annotations": []}},
    ]


def test_deleting_a_thread_deletes_its_messages_and_attachments(store, database_url):
    assistant = store.assistants.create({"model": "m"})["id"]
    thread = store.threads.create(messages=[{"role": "user", "content": "hi"}], assistants=[{"assistant_id": assistant}])["id"]
    store.threads.delete(thread)
    assert count(database_url, "messages") == count(database_url, "thread_assistants") == 0
    with pytest.raises(NotFoundError):
        store.threads.delete(thread)


def test_deleting_an_assistant_detaches_it(store):
    assistant = store.assistants.create({"model": "m"})["id"]
    thread = store.threads.create(assistants=[{"assistant_id": assistant, "instructions": "x"}])["id"]
    store.assistants.delete(assistant)
    assert store.threads.get(thread)["assistants"] == []


def test_attaching_an_unknown_assistant_creates_nothing(store):
    with pytest.raises(ConflictError) as raised:
        store.threads.create(assistants=[{"assistant_id": "asst_missing"}])
    assert (raised.value.param, raised.value.code) == ("assistants", "assistant_not_found")
    assert store.threads.list(Page())["data"] == []


@pytest.mark.parametrize(
    ("given", "model", "models"),
    [
        ({"model": "a"}, "a", [{"model_id": "a"}]),
        ({"models": [{"model_id": "b"}, {"model_id": "c"}]}, "b", [{"model_id": "b"}, {"model_id": "c"}]),
        ({"model": "c", "models": [{"model_id": "b"}, {"model_id": "c"}]}, "c", [{"model_id": "c"}, {"model_id": "b"}]),
    ],
)
def test_model_and_models_fill_each_other(store, given, model, models):
    assistant = store.assistants.create(given)
    assert (assistant["model"], assistant["models"]) == (model, models)


def test_assistant_needs_a_model(store):
    with pytest.raises(InvalidRequestError) as raised:
        store.assistants.create({"name": "nobody"})
    assert raised.value.param == "model"


def test_concurrent_writers_all_succeed(store):
    thread = store.threads.create()["id"]
    errors = []

    def write(n):
        try:
            for i in range(20):
                store.messages.create(thread, {"role": "user", "content": f"{n}-{i}"})
        except Exception as exc:  # collected: the assertion below names any failure
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len(store.threads.with_messages(thread)["messages"]) == 160


@pytest.mark.databases("sqlite")
def test_a_database_locked_by_another_program_is_a_503_and_the_server_recovers(server, api):
    """Another process holding SQLite's write lock: a write waits for it (db.BUSY_TIMEOUT_MS), then gets 503
    with Retry-After; reads go on, and once the lock is released writes succeed again."""
    other = sqlite3.connect(server.data_dir / "jan.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        locked = api.post("/threads", json={"metadata": {"try": "locked"}})
        assert locked.status_code == 503, locked.text
        assert locked.headers["retry-after"] == "1"
        assert locked.json()["error"]["code"] == "database_locked"
        assert api.get("/threads", params={"limit": 1}).status_code == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
    created = api.post("/threads", json={"metadata": {"try": "unlocked"}})
    assert created.status_code == 200, created.text
    assert api.get(f"/threads/{created.json()['id']}").json()["metadata"] == {"try": "unlocked"}
