"""The Files API against the real server, through the official `openai` package and plain HTTP: upload (streamed to
disk, past the JSON body limit), list, retrieve, content, delete; bad uploads; files in messages; on SQLite and
PostgreSQL, and two servers on one database serving each other's files."""

from __future__ import annotations

import hashlib
import os

import httpx
import openai
import pytest

from tests import postgres
from tests.live_server import PATIENT, LiveServer, openai_at
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error

pytestmark = pytest.mark.databases(*postgres.BOTH)


def upload(api: httpx.Client, content: bytes = b"The capital of Atlantis is Poseidonia.\n", name: str = "notes.txt",
           purpose: str = "assistants") -> dict:
    response = api.post("/files", files={"file": (name, content)}, data={"purpose": purpose})
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_retrieve_content_delete_through_the_openai_package(openai_client):
    created = openai_client.files.create(file=("notes.md", b"# Notes\n\nHello, files.\n"), purpose="assistants")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.filename, created.bytes, created.purpose, created.status) == ("notes.md", 23, "assistants", "processed")
    assert_valid(created.model_dump(exclude_unset=True), "OpenAIFile")
    assert openai_client.files.retrieve(created.id) == created
    assert openai_client.files.content(created.id).content == b"# Notes\n\nHello, files.\n"
    assert created.id in [file.id for file in openai_client.files.list(purpose="assistants")]
    deleted = openai_client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert_valid(deleted.model_dump(exclude_unset=True), "DeleteFileResponse")
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.content(created.id)


def test_list_by_purpose_order_and_cursor(api):
    mine = [upload(api, f"batch {n}".encode(), purpose="batch")["id"] for n in range(3)]
    other = upload(api, purpose="user_data")["id"]
    page = api.get("/files", params={"purpose": "batch", "order": "asc", "limit": 100}).json()
    assert_valid(page, "ListFilesResponse")
    ids = [file["id"] for file in page["data"]]
    assert ids[-3:] == mine and other not in ids and all(file["purpose"] == "batch" for file in page["data"])
    after = api.get("/files", params={"purpose": "batch", "order": "asc", "after": mine[0]}).json()
    assert [file["id"] for file in after["data"]] == mine[1:]
    newest = api.get("/files", params={"limit": 1}).json()
    assert [file["id"] for file in newest["data"]] == [other] and newest["has_more"]
    assert assert_openai_error(api.get("/files", params={"after": "file-missing"}), 404)["code"] == "cursor_not_found"


def test_a_binary_file_comes_back_byte_for_byte(api):
    content = os.urandom(3 * 1024 * 1024 + 17)  # chunks of 1 MiB and a rest
    file = upload(api, content, name="random.bin", purpose="user_data")
    assert file["bytes"] == len(content)
    response = api.get(f"/files/{file['id']}/content")
    assert response.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(content).digest()


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"file": ("empty.txt", b"")}, {"purpose": "assistants"}, "file"),
        ({"file": ("a.txt", b"x")}, {"purpose": "fine-tune"}, "purpose"),
        ({"file": ("a.txt", b"x")}, {}, "purpose"),
        ({"purpose": (None, "assistants")}, {}, "file"),  # a form without a file
        ({"file": (None, "text, not a file part")}, {"purpose": "assistants"}, "file"),
    ],
)
def test_bad_uploads_are_400_and_store_nothing(api, files, data, param):
    before = api.get("/files", params={"limit": 100}).json()["data"]
    response = api.post("/files", files=files, data=data)
    assert assert_openai_error(response, 400)["param"] == param
    assert api.get("/files", params={"limit": 100}).json()["data"] == before


@pytest.mark.parametrize("body", [
    b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\nthe upload stops here',
    b"--b0undary\r\nNone--b0undary--\r\n",
    b"not a form",
])
def test_a_broken_or_cut_off_form_is_400_and_stores_nothing(api, body):
    before = api.get("/files", params={"limit": 100}).json()["data"]
    response = api.post("/files", content=body, headers={"content-type": "multipart/form-data; boundary=b0undary"})
    assert assert_openai_error(response, 400)["message"] == "The body is not a complete multipart form."
    assert api.get("/files", params={"limit": 100}).json()["data"] == before


def test_unknown_file_ids_are_404(api):
    for method, path in (("GET", "/files/file-missing"), ("DELETE", "/files/file-missing"), ("GET", "/files/file-missing/content")):
        assert assert_openai_error(api.request(method, path), 404)["code"] == "file_not_found"


def test_messages_take_only_stored_files_and_list_them(api):
    file, other = upload(api), upload(api, b"other")
    thread = api.post("/threads").json()["id"]
    for body in ({"file_ids": ["file-missing"]}, {"attachments": [{"file_id": "file-missing", "tools": [{"type": "file_search"}]}]}):
        response = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "hi", **body})
        assert assert_openai_error(response, 404)["code"] == "file_not_found"
    response = api.post("/threads", json={"messages": [{"role": "user", "content": "hi", "file_ids": ["file-missing"]}]})
    assert assert_openai_error(response, 404)["code"] == "file_not_found"
    assert api.get(f"/threads/{thread}/messages").json()["data"] == []
    attachments = [{"file_id": other["id"], "tools": [{"type": "file_search"}]}]
    message = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "hi", "file_ids": [file["id"]], "attachments": attachments}).json()
    listed = api.get(f"/threads/{thread}/messages/{message['id']}/files").json()["data"]
    assert [f["id"] for f in listed] == [file["id"], other["id"]]
    api.delete(f"/files/{other['id']}")
    listed = api.get(f"/threads/{thread}/messages/{message['id']}/files").json()["data"]
    assert [f["id"] for f in listed] == [file["id"]]
    gone = api.get(f"/threads/{thread}/messages/{message['id']}/files/{other['id']}")
    assert assert_openai_error(gone, 404)["code"] == "file_not_found"


def test_uploads_pass_the_json_body_limit_and_stop_at_their_own(tmp_path, database_url):
    """The JSON body limit is 64 KiB here and the upload limit 1 MiB: a file of 1 MiB passes, sent whole or chunked,
    one byte more is a 413 either way, and a JSON body over 64 KiB is still refused."""
    args = ("--database-url", database_url, "--max-body-bytes", "65536", "--max-file-bytes", str(1024 * 1024))
    with LiveServer(tmp_path / "data", args=args) as server, httpx.Client(base_url=server.api_url, timeout=PATIENT) as api:
        content = os.urandom(1024 * 1024)
        file = upload(api, content, purpose="user_data")
        assert api.get(f"/files/{file['id']}/content").content == content
        streamed = api.post("/files", content=_multipart_stream(content), headers={"content-type": "multipart/form-data; boundary=b0undary"})
        assert streamed.status_code == 200, streamed.text
        assert api.get(f"/files/{streamed.json()['id']}/content").content == content
        too_large = api.post("/files", files={"file": ("big.bin", content + b"!")}, data={"purpose": "user_data"})
        assert assert_openai_error(too_large, 413)["code"] == "file_too_large"
        chunked = api.post("/files", content=_multipart_stream(content + b"!"), headers={"content-type": "multipart/form-data; boundary=b0undary"})
        assert assert_openai_error(chunked, 413)["code"] == "file_too_large"
        assert {f["id"] for f in api.get("/files").json()["data"]} == {file["id"], streamed.json()["id"]}
        assert api.post("/threads", json={"title": "x" * 70_000}).status_code == 413
        assert list((tmp_path / "data" / "uploads").iterdir()) == []  # nothing staged is left behind


def peak_memory_bytes(server: LiveServer) -> int:
    """The server process's peak resident memory so far (Linux's VmHWM)."""
    with open(f"/proc/{server.process.pid}/status") as status_file:
        status = status_file.read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def test_a_large_file_never_sits_whole_in_memory(tmp_path, database_url):
    """A 128 MiB upload and download raise the server's peak memory by far less than the file: it goes through a
    chunk at a time (a server holding it whole, as the body limit and Connexion's form parsing would, grows by
    its size at least)."""
    size = 128 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    with LiveServer(tmp_path / "data", args=("--database-url", database_url)) as server, openai_at(server.api_url) as client:
        client.files.list()  # the first request's own allocations come first
        before = peak_memory_bytes(server)
        body = (b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
                b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n')
        stream = iter([body, *(block for _ in range(size // len(block))), b"\r\n--b0undary--\r\n"])
        headers = {"content-type": "multipart/form-data; boundary=b0undary"}
        file = httpx.post(f"{server.api_url}/files", content=stream, headers=headers, timeout=PATIENT).json()
        assert file["bytes"] == size
        with httpx.stream("GET", f"{server.api_url}/files/{file['id']}/content", timeout=PATIENT) as response:
            assert sum(len(chunk) for chunk in response.iter_bytes()) == size
        assert peak_memory_bytes(server) - before < size // 4


def test_a_client_cannot_name_a_staged_file(server, api):
    """The header that names an upload's staged file is the server's own: a client's is dropped, so a form with an
    empty file does not store what another upload staged."""
    staged = server.data_dir / "uploads" / "0123456789abcdef0123456789abcdef"
    staged.write_bytes(b"another client's upload")
    try:
        response = api.post("/files", files={"file": ("x.txt", b"")}, data={"purpose": "assistants"},
                            headers={"x-jan-staged-file": staged.name})
        assert assert_openai_error(response, 400)["param"] == "file"
    finally:
        staged.unlink()


def _multipart_stream(content: bytes):
    """A multipart body sent chunked (no Content-Length), so only the bytes as they arrive can tell its size."""
    yield b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
    yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    for start in range(0, len(content), 65536):
        yield content[start:start + 65536]
    yield b"\r\n--b0undary--\r\n"


def test_every_server_on_one_database_serves_every_file(tmp_path, database_url):
    args = ("--database-url", database_url)
    with LiveServer(tmp_path / "one", args=args) as one, LiveServer(tmp_path / "two", args=args) as two:
        with openai_at(one.api_url) as first, openai_at(two.api_url) as second:
            content = os.urandom(2 * 1024 * 1024)
            file = first.files.create(file=("shared.bin", content), purpose="user_data")
            assert second.files.content(file.id).content == content
            second.files.delete(file.id)
            with pytest.raises(openai.NotFoundError):
                first.files.retrieve(file.id)
