"""Messages over HTTP against the real server: create, retrieve, modify, delete, list and page, and their files."""

from __future__ import annotations

import pytest

from tests import postgres
from tests.test_app import assert_openai_error
from tests.test_files import upload
from tests.test_threads import new_thread

pytestmark = pytest.mark.databases(*postgres.BOTH)

MESSAGE_FIELDS = {
    "id", "object", "created_at", "thread_id", "status", "incomplete_details", "completed_at", "incomplete_at",
    "role", "content", "assistant_id", "run_id", "attachments", "metadata", "file_ids",
}


def new_message(api, thread_id: str, **body) -> dict:
    response = api.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": "hi", **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture()
def thread_id(api) -> str:
    return new_thread(api)["id"]


def test_create_message_from_a_string(api, thread_id):
    message = new_message(api, thread_id, content="How does AI work?", metadata={"source": "test"})
    assert set(message) == MESSAGE_FIELDS
    assert message["id"].startswith("msg_") and message["object"] == "thread.message"
    assert (message["thread_id"], message["role"], message["status"]) == (thread_id, "user", "completed")
    assert message["content"] == [{"type": "text", "text": {"value": "How does AI work?", "annotations": []}}]
    assert (message["metadata"], message["file_ids"], message["attachments"]) == ({"source": "test"}, [], [])


def test_create_message_from_text_parts(api, thread_id):
    message = new_message(api, thread_id, role="assistant", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert [part["text"]["value"] for part in message["content"]] == ["a", "b"]
    assert message["role"] == "assistant"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"role": "system", "content": "x"}, "role"),
        ({"content": "x"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "user", "content": "x", "file_ids": [f"file-{n}" for n in range(11)]}, "file_ids"),
        ({"role": "user", "content": "x", "metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
def test_create_message_rejects_invalid_bodies(api, thread_id, body, param):
    error = assert_openai_error(api.post(f"/threads/{thread_id}/messages", json=body), 400)
    assert error["param"].split(".")[0] == param  # the spec's validator names nested fields: metadata.k


def test_create_message_in_unknown_thread(api):
    response = api.post("/threads/thread_missing/messages", json={"role": "user", "content": "x"})
    assert assert_openai_error(response, 404)["code"] == "thread_not_found"


def test_retrieve_message(api, thread_id):
    message = new_message(api, thread_id)
    assert api.get(f"/threads/{thread_id}/messages/{message['id']}").json() == message


def test_retrieve_unknown_message(api, thread_id):
    assert assert_openai_error(api.get(f"/threads/{thread_id}/messages/msg_missing"), 404)["code"] == "message_not_found"
    other = new_message(api, new_thread(api)["id"])
    wrong_thread = api.get(f"/threads/{thread_id}/messages/{other['id']}")
    assert assert_openai_error(wrong_thread, 404)["code"] == "message_not_found"


def test_modify_message_replaces_its_metadata_only(api, thread_id):
    message = new_message(api, thread_id, content="Keep me", metadata={"a": "1"})
    response = api.post(f"/threads/{thread_id}/messages/{message['id']}", json={"metadata": {"b": "2"}})
    assert response.status_code == 200, response.text
    assert response.json() == {**message, "metadata": {"b": "2"}}
    assert api.get(f"/threads/{thread_id}/messages/{message['id']}").json()["metadata"] == {"b": "2"}
    assert api.post(f"/threads/{thread_id}/messages/{message['id']}").json()["metadata"] == {"b": "2"}


def test_modify_message_errors(api, thread_id):
    message = new_message(api, thread_id)
    url = f"/threads/{thread_id}/messages/{message['id']}"
    assert assert_openai_error(api.post(url, json={"metadata": {"k": "v" * 513}}), 400)["param"].startswith("metadata")
    assert assert_openai_error(api.post(url, json={"content": "rewritten"}), 400)
    assert assert_openai_error(api.post(f"/threads/{thread_id}/messages/msg_missing", json={}), 404)["code"] == "message_not_found"
    assert assert_openai_error(api.post(f"/threads/thread_missing/messages/{message['id']}", json={}), 404)["code"] == "thread_not_found"
    assert api.get(url).json() == message


def test_delete_message(api, thread_id):
    kept, gone = new_message(api, thread_id, content="kept"), new_message(api, thread_id, content="gone")
    response = api.delete(f"/threads/{thread_id}/messages/{gone['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": gone["id"], "object": "thread.message.deleted", "deleted": True}
    assert [m["id"] for m in api.get(f"/threads/{thread_id}/messages").json()["data"]] == [kept["id"]]
    assert assert_openai_error(api.get(f"/threads/{thread_id}/messages/{gone['id']}"), 404)["code"] == "message_not_found"
    assert assert_openai_error(api.delete(f"/threads/{thread_id}/messages/{gone['id']}"), 404)["code"] == "message_not_found"


def test_a_message_cannot_be_deleted_through_another_thread(api, thread_id):
    message = new_message(api, thread_id)
    other = new_thread(api)["id"]
    assert assert_openai_error(api.delete(f"/threads/{other}/messages/{message['id']}"), 404)["code"] == "message_not_found"
    assert api.get(f"/threads/{thread_id}/messages/{message['id']}").status_code == 200


def test_list_messages_pages_both_ways(api, thread_id):
    created = [new_message(api, thread_id, content=str(n))["id"] for n in range(5)]
    listed = api.get(f"/threads/{thread_id}/messages").json()
    assert [m["id"] for m in listed["data"]] == created[::-1]  # newest first by default
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (created[-1], created[0], False)

    first = api.get(f"/threads/{thread_id}/messages", params={"order": "asc", "limit": 2}).json()
    second = api.get(f"/threads/{thread_id}/messages", params={"order": "asc", "limit": 2, "after": first["last_id"]}).json()
    assert [m["id"] for m in first["data"] + second["data"]] == created[:4]
    assert first["has_more"] and second["has_more"]
    back = api.get(f"/threads/{thread_id}/messages", params={"order": "asc", "limit": 2, "before": second["first_id"]}).json()
    assert [m["id"] for m in back["data"]] == created[:2] and back["has_more"] is False


def test_list_messages_errors(api, thread_id):
    assert assert_openai_error(api.get("/threads/thread_missing/messages"), 404)["code"] == "thread_not_found"
    assert assert_openai_error(api.get(f"/threads/{thread_id}/messages", params={"limit": 101}), 400)["param"] == "limit"
    assert assert_openai_error(api.get(f"/threads/{thread_id}/messages", params={"before": "msg missing"}), 400)["param"] == "before"
    missing = assert_openai_error(api.get(f"/threads/{thread_id}/messages", params={"before": "msg_missing"}), 404)
    assert (missing["param"], missing["code"]) == ("before", "cursor_not_found")


def test_message_files(api, thread_id):
    first, second = upload(api)["id"], upload(api)["id"]
    message = new_message(api, thread_id, file_ids=[first, second])
    files = api.get(f"/threads/{thread_id}/messages/{message['id']}/files").json()
    assert files["object"] == "list" and [f["id"] for f in files["data"]] == [first, second]
    one = api.get(f"/threads/{thread_id}/messages/{message['id']}/files/{second}").json()
    assert one == {"id": second, "object": "thread.message.file", "created_at": message["created_at"], "message_id": message["id"]}


def test_message_files_errors(api, thread_id):
    file_id = upload(api)["id"]
    message = new_message(api, thread_id, file_ids=[file_id])
    unknown_file = api.get(f"/threads/{thread_id}/messages/{message['id']}/files/file-other")
    assert assert_openai_error(unknown_file, 404)["code"] == "file_not_found"
    assert assert_openai_error(api.get(f"/threads/{thread_id}/messages/msg_missing/files"), 404)["code"] == "message_not_found"
    assert assert_openai_error(api.get(f"/threads/thread_missing/messages/{message['id']}/files/{file_id}"), 404)["code"] == "thread_not_found"
