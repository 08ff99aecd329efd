"""Assistants over HTTP against the real server: OpenAI's fields and Jan's, every operation and its errors."""

from __future__ import annotations

import pytest

from tests import postgres
from tests.test_app import assert_openai_error
from tests.test_threads import new_assistant, new_thread

pytestmark = pytest.mark.databases(*postgres.BOTH)

ASSISTANT_FIELDS = {
    "id", "object", "created_at", "name", "description", "model", "instructions", "tools", "tool_resources",
    "metadata", "temperature", "top_p", "response_format", "models", "avatar",
}


def test_create_assistant_the_openai_way(api):
    assistant = new_assistant(
        api, name="Math Tutor", description="Helps.", instructions="Be concise.", tools=[{"type": "code_interpreter"}],
        metadata={"team": "a"}, temperature=0.7, top_p=0.9,
    )
    assert set(assistant) == ASSISTANT_FIELDS
    assert assistant["id"].startswith("asst_") and assistant["object"] == "assistant"
    assert (assistant["model"], assistant["models"]) == ("smollm2-135m-instruct", [{"model_id": "smollm2-135m-instruct"}])
    assert (assistant["name"], assistant["instructions"], assistant["temperature"], assistant["top_p"]) == ("Math Tutor", "Be concise.", 0.7, 0.9)
    assert assistant["tools"] == [{"type": "code_interpreter"}] and assistant["metadata"] == {"team": "a"}


def test_create_assistant_the_jan_way(api):
    response = api.post("/assistants/", json={"models": [{"model_id": "model_0"}], "avatar": "https://example.invalid/a.png"})
    assert response.status_code == 200, response.text
    assistant = response.json()
    assert (assistant["model"], assistant["models"], assistant["avatar"]) == ("model_0", [{"model_id": "model_0"}], "https://example.invalid/a.png")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"models": [{"model_id": "m"}], "temperature": 5}, "temperature"),
        ({"model": "m", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"model": "m", "unknown_field": 1}, None),
    ],
)
def test_create_assistant_rejects_invalid_bodies(api, body, param):
    error = assert_openai_error(api.post("/assistants", json=body), 400)
    if param:
        assert error["param"] == param


def test_create_assistant_needs_a_model(api):
    assert_openai_error(api.post("/assistants", json={"name": "nobody"}), 400)


def test_get_assistant(api):
    assistant = new_assistant(api)
    assert api.get(f"/assistants/{assistant['id']}").json() == assistant
    assert assert_openai_error(api.get("/assistants/asst_missing"), 404)["code"] == "assistant_not_found"


def test_modify_assistant_changes_only_what_is_given(api):
    assistant = new_assistant(api, name="Before", instructions="Stay.")
    response = api.post(f"/assistants/{assistant['id']}", json={"name": "After", "models": [{"model_id": "other"}]})
    assert response.status_code == 200, response.text
    modified = response.json()
    assert (modified["name"], modified["instructions"]) == ("After", "Stay.")
    assert (modified["model"], modified["models"]) == ("other", [{"model_id": "other"}])
    assert api.get(f"/assistants/{assistant['id']}").json() == modified


def test_modify_assistant_without_a_body_changes_nothing(api):
    assistant = new_assistant(api, name="Same")
    response = api.post(f"/assistants/{assistant['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == assistant


def test_modify_assistant_errors(api):
    assert assert_openai_error(api.post("/assistants/asst_missing", json={"name": "x"}), 404)["code"] == "assistant_not_found"
    assistant = new_assistant(api)
    assert assert_openai_error(api.post(f"/assistants/{assistant['id']}", json={"top_p": 2}), 400)["param"] == "top_p"


def test_delete_assistant_detaches_it_from_threads(api):
    assistant = new_assistant(api)
    thread = new_thread(api, assistants=[{"assistant_id": assistant["id"]}])
    deleted = api.delete(f"/assistants/{assistant['id']}").json()
    assert deleted == {"id": assistant["id"], "object": "assistant.deleted", "deleted": True}
    assert assert_openai_error(api.get(f"/assistants/{assistant['id']}"), 404)["code"] == "assistant_not_found"
    assert api.get(f"/threads/{thread['id']}").json()["assistants"] == []
    assert assert_openai_error(api.delete(f"/assistants/{assistant['id']}"), 404)["code"] == "assistant_not_found"


def test_list_assistants_pages(api):
    created = [new_assistant(api, name=f"paging-{n}")["id"] for n in range(3)]
    newest = api.get("/assistants/", params={"limit": 2}).json()
    assert newest["object"] == "list" and [a["id"] for a in newest["data"]] == created[::-1][:2] and newest["has_more"]
    rest = api.get("/assistants", params={"limit": 1, "after": newest["last_id"]}).json()
    assert [a["id"] for a in rest["data"]] == [created[0]]


def test_list_assistants_rejects_bad_paging(api):
    assert assert_openai_error(api.get("/assistants/", params={"order": "up"}), 400)["param"] == "order"
    assert assert_openai_error(api.get("/assistants/", params={"after": "asst/missing"}), 400)["param"] == "after"
    assert assert_openai_error(api.get("/assistants/", params={"after": "asst_missing"}), 404)["code"] == "cursor_not_found"
