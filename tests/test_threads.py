"""Threads over HTTP against the real server: every operation's success and error cases, paging, restarts."""

from __future__ import annotations

import httpx
import pytest

from tests import postgres
from tests.live_server import LiveServer
from tests.test_app import assert_openai_error
from tests.test_files import upload

pytestmark = pytest.mark.databases(*postgres.BOTH)


def new_assistant(api, **fields) -> dict:
    response = api.post("/assistants", json={"model": "smollm2-135m-instruct", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def new_thread(api, **body) -> dict:
    response = api.post("/threads", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_create_thread_with_messages_in_order(api):
    file_id = upload(api)["id"]
    thread = new_thread(
        api,
        messages=[
            {"role": "user", "content": "Hello, what is AI?", "file_ids": [file_id]},
            {"role": "assistant", "content": [{"type": "text", "text": "A field of computer science."}]},
        ],
        metadata={"project": "demo"},
        title="What is AI?",
    )
    assert thread["id"].startswith("thread_") and thread["object"] == "thread"
    assert isinstance(thread["created_at"], int)
    assert (thread["metadata"], thread["title"], thread["tool_resources"], thread["assistants"]) == ({"project": "demo"}, "What is AI?", None, [])
    messages = api.get(f"/threads/{thread['id']}/messages", params={"order": "asc"}).json()["data"]
    assert [m["content"][0]["text"]["value"] for m in messages] == ["Hello, what is AI?", "A field of computer science."]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["file_ids"] == [file_id]


def test_create_thread_without_a_body(api):
    response = api.post("/threads")
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {}


def test_create_thread_rejects_bad_metadata(api):
    error = assert_openai_error(api.post("/threads", json={"metadata": {f"k{n}": "v" for n in range(17)}}), 400)
    assert error["param"].startswith("metadata")
    error = assert_openai_error(api.post("/threads", json={"metadata": {"k" * 65: "v"}}), 400)
    assert error["param"].startswith("metadata")


def test_create_thread_rejects_a_bad_message(api):
    error = assert_openai_error(api.post("/threads", json={"messages": [{"role": "system", "content": "x"}]}), 400)
    assert error["type"] == "invalid_request_error"


def test_get_thread(api):
    thread = new_thread(api, metadata={"a": "b"})
    assert api.get(f"/threads/{thread['id']}").json() == thread


def test_get_unknown_thread_is_a_404(api):
    error = assert_openai_error(api.get("/threads/thread_missing"), 404)
    assert error["code"] == "thread_not_found"


def test_modify_thread_replaces_metadata_and_title_and_appends_messages(api):
    thread = new_thread(api, messages=[{"role": "user", "content": "first"}], metadata={"a": "1"})
    response = api.post(
        f"/threads/{thread['id']}",
        json={"metadata": {"b": "2"}, "title": "Renamed", "messages": [{"role": "user", "content": "second"}]},
    )
    assert response.status_code == 200, response.text
    modified = response.json()
    assert (modified["id"], modified["metadata"], modified["title"]) == (thread["id"], {"b": "2"}, "Renamed")
    messages = api.get(f"/threads/{thread['id']}/", params={}).json()["messages"]
    assert [m["content"][0]["text"]["value"] for m in messages] == ["first", "second"]


def test_modify_thread_errors(api):
    assert assert_openai_error(api.post("/threads/thread_missing", json={"title": "x"}), 404)["code"] == "thread_not_found"
    thread = new_thread(api)
    error = assert_openai_error(api.post(f"/threads/{thread['id']}", json={"metadata": {"k": "v" * 513}}), 400)
    assert error["param"].startswith("metadata")


def test_delete_thread_removes_it_and_its_messages(api):
    thread = new_thread(api, messages=[{"role": "user", "content": "bye"}])
    message_id = api.get(f"/threads/{thread['id']}/messages").json()["first_id"]
    assert api.delete(f"/threads/{thread['id']}").json() == {"id": thread["id"], "object": "thread.deleted", "deleted": True}
    assert assert_openai_error(api.get(f"/threads/{thread['id']}"), 404)["code"] == "thread_not_found"
    gone = api.get(f"/threads/{thread['id']}/messages/{message_id}")
    assert assert_openai_error(gone, 404)["code"] == "thread_not_found"
    assert assert_openai_error(api.delete(f"/threads/{thread['id']}"), 404)["code"] == "thread_not_found"


def test_list_threads_pages_through_every_thread(api):
    mine = {new_thread(api, metadata={"batch": "paging"})["id"] for _ in range(5)}
    seen, after = [], None
    while True:
        page = api.get("/threads", params={"limit": 2, **({"after": after} if after else {})}).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert mine <= set(seen) and len(seen) == len(set(seen))
    newest_first = api.get("/threads", params={"limit": 100}).json()["data"]
    oldest_first = api.get("/threads", params={"limit": 100, "order": "asc"}).json()["data"]
    assert [t["id"] for t in newest_first] == [t["id"] for t in oldest_first][::-1]


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "sideways"}, "order"), ({"after": "thread/x"}, "after")],
)
def test_list_threads_rejects_bad_paging(api, params, param):
    assert assert_openai_error(api.get("/threads", params=params), 400)["param"] == param


@pytest.mark.parametrize("cursor", ["after", "before"])
def test_a_cursor_not_in_the_list_is_a_404(api, cursor):
    """A well-formed id that names no object of the list, as after its object was deleted (documented in the spec)."""
    thread = api.post("/threads", json={}).json()["id"]
    api.delete(f"/threads/{thread}")
    for path in ("/threads", "/assistants", f"/threads/{api.post('/threads', json={}).json()['id']}/messages"):
        error = assert_openai_error(api.get(path, params={cursor: thread}), 404)
        assert (error["param"], error["code"]) == (cursor, "cursor_not_found"), path


def test_attach_assistant_with_overrides(api):
    assistant = new_assistant(api, name="Tutor", instructions="Be concise.")
    thread = new_thread(api)
    response = api.post(f"/threads/{thread['id']}/assistants/{assistant['id']}", json={"instructions": "Be verbose."})
    assert response.status_code == 200, response.text
    assert response.json()["assistants"] == [{"assistant_id": assistant["id"], "instructions": "Be verbose."}]
    attached = api.get(f"/threads/{thread['id']}/assistants").json()
    assert attached["object"] == "list" and [a["id"] for a in attached["data"]] == [assistant["id"]]
    assert (attached["data"][0]["instructions"], attached["data"][0]["name"]) == ("Be verbose.", "Tutor")


def test_attach_assistant_without_a_body(api):
    assistant = new_assistant(api)
    thread = new_thread(api)
    response = api.post(f"/threads/{thread['id']}/assistants/{assistant['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["assistants"] == [{"assistant_id": assistant["id"]}]


def test_attach_assistant_errors(api):
    assistant = new_assistant(api)
    thread = new_thread(api)
    assert assert_openai_error(api.post(f"/threads/thread_missing/assistants/{assistant['id']}", json={}), 404)["code"] == "thread_not_found"
    assert assert_openai_error(api.post(f"/threads/{thread['id']}/assistants/asst_missing", json={}), 404)["code"] == "assistant_not_found"
    error = assert_openai_error(api.post(f"/threads/{thread['id']}/assistants/{assistant['id']}", json={"temperature": 3}), 400)
    assert error["type"] == "invalid_request_error"


def test_thread_assistants_given_at_creation_and_replaced_by_modify(api):
    first, second = new_assistant(api), new_assistant(api)
    thread = new_thread(api, assistants=[{"assistant_id": first["id"], "model": "other-model"}])
    assert thread["assistants"] == [{"assistant_id": first["id"], "model": "other-model"}]
    effective = api.get(f"/threads/{thread['id']}/assistants").json()["data"][0]
    assert (effective["model"], effective["models"]) == ("other-model", [{"model_id": "other-model"}])
    modified = api.post(f"/threads/{thread['id']}", json={"assistants": [{"assistant_id": second["id"]}]}).json()
    assert modified["assistants"] == [{"assistant_id": second["id"]}]
    error = assert_openai_error(api.post("/threads", json={"assistants": [{"assistant_id": "asst_missing"}]}), 409)
    assert (error["param"], error["code"]) == ("assistants", "assistant_not_found")
    thread = new_thread(api)
    error = assert_openai_error(api.post(f"/threads/{thread['id']}", json={"assistants": [{"assistant_id": "asst_missing"}]}), 409)
    assert (error["param"], error["code"]) == ("assistants", "assistant_not_found")  # a 404 would say the thread is missing


def test_get_thread_assistants_of_unknown_thread(api):
    assert assert_openai_error(api.get("/threads/thread_missing/assistants"), 404)["code"] == "thread_not_found"


def test_list_thread_message_returns_the_thread_with_its_messages(api):
    thread = new_thread(api, messages=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    response = api.get(f"/threads/{thread['id']}/")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == thread["id"] and body["object"] == "thread"
    assert [m["content"][0]["text"]["value"] for m in body["messages"]] == ["one", "two"]
    assert assert_openai_error(api.get("/threads/thread_missing/"), 404)["code"] == "thread_not_found"


def test_threads_survive_a_restart(tmp_path):
    live = LiveServer(tmp_path / "data").start()
    try:
        thread = httpx.post(f"{live.api_url}/threads", json={"messages": [{"role": "user", "content": "remember me"}]}).json()
    finally:
        live.stop()
    live = LiveServer(tmp_path / "data").start()
    try:
        again = httpx.get(f"{live.api_url}/threads/{thread['id']}/").json()
    finally:
        live.stop()
    assert again["id"] == thread["id"] and again["created_at"] == thread["created_at"]
    assert again["messages"][0]["content"][0]["text"]["value"] == "remember me"


def test_database_url_setting_chooses_the_database(tmp_path):
    database = tmp_path / "elsewhere.db"
    live = LiveServer(tmp_path / "data", env={"JAN_DATABASE_URL": f"sqlite:///{database}"}).start()
    try:
        assert httpx.post(f"{live.api_url}/threads", json={}).status_code == 200
    finally:
        live.stop()
    assert database.exists() and not (tmp_path / "data" / "jan.db").exists()
