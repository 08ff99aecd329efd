"""Vector stores against the real server and the bundled model, through the official `openai` package: stores, their
files and file batches ingested in the background (text, Markdown, HTML, JSON, code, PDF), a PDF that does not parse,
bad input, deleting a file out of every store, and ingestion resumed after a restart; on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import openai
import pytest
from sqlalchemy import create_engine, text

from jan_server.storage.db import driver_url
from tests import postgres
from tests.live_server import LiveServer, openai_at
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error

pytestmark = pytest.mark.databases(*postgres.BOTH)

FACT = "The capital of Atlantis is Poseidonia."


def pdf(line: str) -> bytes:
    """A one-page PDF whose text is `line`."""
    stream = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def settled(client: openai.OpenAI, store_id: str, timeout: float = 300):
    """The store once none of its files is in progress (a bound for a hang, not a speed requirement)."""
    deadline = time.monotonic() + timeout
    while (store := client.vector_stores.retrieve(store_id)).file_counts.in_progress and time.monotonic() < deadline:
        time.sleep(0.2)
    return store


def content(client: openai.OpenAI, store_id: str, file_id: str) -> str:
    return "".join(part.text for part in client.vector_stores.files.content(file_id, vector_store_id=store_id))


def test_a_store_ingests_its_files_through_the_openai_package(openai_client):
    store = openai_client.vector_stores.create(name="notes", metadata={"project": "demo"})
    assert_valid(store.model_dump(exclude_unset=True), "VectorStoreObject")
    assert (store.status, store.file_counts.total, store.embedding_model) == ("completed", 0, "smollm2-135m-instruct")
    file = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("notes.md", f"# Atlantis\n\n{FACT}\n".encode()),
                                                             attributes={"topic": "geography", "year": 2024})
    assert (file.status, file.last_error, file.attributes) == ("completed", None, {"topic": "geography", "year": 2024})
    assert file.chunking_strategy.static.max_chunk_size_tokens == 800 and file.usage_bytes > 0
    assert_valid(file.model_dump(exclude_unset=True), "VectorStoreFileObject")
    assert FACT in content(openai_client, store.id, file.id)
    store = openai_client.vector_stores.retrieve(store.id)
    assert (store.status, store.file_counts.completed, store.file_counts.total) == ("completed", 1, 1) and store.usage_bytes == file.usage_bytes
    updated = openai_client.vector_stores.files.update(file.id, vector_store_id=store.id, attributes={"topic": "myth"})
    assert updated.attributes == {"topic": "myth"}
    listed = openai_client.vector_stores.files.list(vector_store_id=store.id, filter="completed")
    assert [f.id for f in listed] == [file.id] and not list(openai_client.vector_stores.files.list(vector_store_id=store.id, filter="failed"))
    renamed = openai_client.vector_stores.update(store.id, name="renamed", expires_after={"anchor": "last_active_at", "days": 7})
    assert (renamed.name, renamed.expires_at) == ("renamed", renamed.last_active_at + 7 * 86400)
    assert openai_client.vector_stores.update(store.id, expires_after=None).expires_at is None
    assert store.id in [s.id for s in openai_client.vector_stores.list(limit=100)]
    deleted = openai_client.vector_stores.files.delete(file.id, vector_store_id=store.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (file.id, True, "vector_store.file.deleted")
    assert openai_client.files.retrieve(file.id).id == file.id  # the file itself stays
    assert openai_client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.vector_stores.retrieve(store.id)


def test_file_batches_read_every_kind_of_document(openai_client):
    store = openai_client.vector_stores.create(name="kinds")
    documents = {
        "fact.txt": FACT.encode(),
        "page.html": f"<html><head><style>p {{color: red}}</style></head><body><h1>Atlas</h1><p>{FACT}</p><script>x()</script></body></html>".encode(),
        "data.json": b'{"city": "Poseidonia", "country": "Atlantis"}',
        "code.py": b"def capital():\n    return 'Poseidonia'\n",
        "fact.pdf": pdf(FACT),
    }
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}
    batch = openai_client.vector_stores.file_batches.upload_and_poll(store.id, files=list(documents.items()), chunking_strategy=static)
    assert_valid(batch.model_dump(exclude_unset=True), "VectorStoreFileBatchObject")
    assert (batch.status, batch.file_counts.completed, batch.file_counts.total) == ("completed", 5, 5)
    files = {f.id: f for f in openai_client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)}
    names = {openai_client.files.retrieve(file_id).filename: file_id for file_id in files}
    assert {f.chunking_strategy.static.max_chunk_size_tokens for f in files.values()} == {100}
    texts = {name: content(openai_client, store.id, file_id) for name, file_id in names.items()}
    assert texts["fact.pdf"].strip() == FACT and "Atlas\n" + FACT == texts["page.html"] and "color" not in texts["page.html"]
    assert texts["code.py"] == documents["code.py"].decode()
    again = openai_client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert again.status == "cancelled" and again.file_counts.completed == 5  # what was done stays


def test_a_pdf_that_does_not_parse_fails_and_the_store_stays_usable(openai_client):
    store = openai_client.vector_stores.create(name="broken")
    broken = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("broken.pdf", b"%PDF-1.7\nnot a pdf at all"))
    assert broken.status == "failed" and broken.last_error.code == "invalid_file" and "PDF" in broken.last_error.message
    binary = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("blob.bin", bytes(range(256))))
    assert binary.status == "failed" and binary.last_error.code == "unsupported_file"
    good = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("fact.txt", FACT.encode()))
    assert good.status == "completed"
    store = openai_client.vector_stores.retrieve(store.id)
    assert (store.status, store.file_counts.failed, store.file_counts.completed) == ("completed", 2, 1)
    assert content(openai_client, store.id, broken.id) == ""


def test_bad_input_is_a_clear_4xx_and_changes_nothing(api):
    before = api.get("/vector_stores", params={"limit": 100}).json()["data"]
    file = api.post("/files", files={"file": ("a.txt", b"text")}, data={"purpose": "assistants"}).json()
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}}
    assert assert_openai_error(api.post("/vector_stores", json={"file_ids": ["file-missing"]}), 404)["code"] == "file_not_found"
    assert assert_openai_error(api.post("/vector_stores", json={"chunking_strategy": static}), 400)["param"] == "chunking_strategy"
    assert assert_openai_error(api.post("/vector_stores", json={"embedding_model": "no-such-model"}), 404)["param"] == "embedding_model"
    assert api.get("/vector_stores", params={"limit": 100}).json()["data"] == before
    store = api.post("/vector_stores", json={}).json()
    response = api.post(f"/vector_stores/{store['id']}/file_batches", json={"file_ids": [file["id"], "file-missing"]})
    assert assert_openai_error(response, 404)["code"] == "file_not_found"
    assert api.get(f"/vector_stores/{store['id']}").json()["file_counts"]["total"] == 0
    assert assert_openai_error(api.get("/vector_stores/vs_missing/files"), 404)["code"] == "vector_store_not_found"
    assert assert_openai_error(api.get(f"/vector_stores/{store['id']}/files/{file['id']}"), 404)["code"] == "file_not_found"
    assert assert_openai_error(api.get(f"/vector_stores/{store['id']}/file_batches/vsfb_missing"), 404)["code"] == "batch_not_found"
    assert assert_openai_error(api.post(f"/vector_stores/{store['id']}/files", json={"file_id": file["id"], "chunking_strategy": {"type": "fixed"}}), 400)


def chunk_count(url: str, file_id: str) -> int:
    engine = create_engine(driver_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM vector_store_chunks WHERE file_id = :f"), {"f": file_id}).scalar_one()
    finally:
        engine.dispose()


def test_deleting_a_file_takes_its_chunks_out_of_every_store(tmp_path, database_url):
    with LiveServer(tmp_path / "data", args=("--database-url", database_url)) as server, openai_at(server.api_url) as client:
        file = client.files.create(file=("fact.txt", FACT.encode()), purpose="assistants")
        stores = [client.vector_stores.create(name=f"store {n}", file_ids=[file.id]).id for n in range(2)]
        assert [settled(client, store_id).file_counts.completed for store_id in stores] == [1, 1]
        assert chunk_count(database_url, file.id) == 2
        client.files.delete(file.id)
        assert [client.vector_stores.retrieve(store_id).file_counts.total for store_id in stores] == [0, 0]
        assert chunk_count(database_url, file.id) == 0


def test_ingestion_left_in_progress_resumes_after_a_restart(tmp_path, database_url):
    """A stop that left a file in progress (its state set back here, its chunks gone, as a crash mid-ingestion
    leaves it): the next server ingests it."""
    args = ("--database-url", database_url)
    with LiveServer(tmp_path / "data", args=args) as server, openai_at(server.api_url) as client:
        file = client.files.create(file=("fact.txt", FACT.encode()), purpose="assistants")
        store = client.vector_stores.create(name="resumed", file_ids=[file.id])
        assert settled(client, store.id).file_counts.completed == 1
    engine = create_engine(driver_url(database_url))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM vector_store_chunks WHERE file_id = :f"), {"f": file.id})
        connection.execute(text("UPDATE vector_store_files SET status = 'in_progress', usage_bytes = 0 WHERE id = :f"), {"f": file.id})
    engine.dispose()
    with LiveServer(tmp_path / "data", args=args) as server, openai_at(server.api_url) as client:
        store = settled(client, store.id)
        assert (store.file_counts.completed, store.file_counts.in_progress) == (1, 0) and store.usage_bytes > 0
        assert chunk_count(database_url, file.id) == 1


DOCUMENTS = {
    "atlantis.txt": ("The capital of Atlantis is Poseidonia, a city of rings and canals.", {"author": "ada", "year": 2024}),
    "cooking.txt": ("To bake bread, knead flour, water, salt and yeast, then let the dough rise.", {"author": "grace", "year": 2023}),
    "planets.txt": ("Jupiter is the largest planet of the solar system, a gas giant.", {"author": "ada", "year": 2021}),
}


@pytest.fixture(scope="module")
def searchable(live_servers, database):
    """A store of three short documents with attributes, ingested."""
    with openai_at(live_servers(database).api_url) as client:
        store = client.vector_stores.create(name="search")
        ids = {}
        for name, (body, attributes) in DOCUMENTS.items():
            file = client.files.create(file=(name, body.encode()), purpose="assistants")
            ids[name] = client.vector_stores.files.create_and_poll(file_id=file.id, vector_store_id=store.id, attributes=attributes).id
        yield store.id, ids


def test_search_finds_the_file_that_holds_the_fact(openai_client, searchable):
    store_id, ids = searchable
    page = openai_client.vector_stores.search(store_id, query="What is the capital of Atlantis?")
    assert_valid(page.model_dump(exclude_unset=True), "VectorStoreSearchResultsPage")
    assert page.search_query == ["What is the capital of Atlantis?"] and len(page.data) == 3
    best = page.data[0]
    assert (best.file_id, best.filename, best.attributes) == (ids["atlantis.txt"], "atlantis.txt", {"author": "ada", "year": 2024})
    assert "Poseidonia" in best.content[0].text and 0 < page.data[-1].score <= best.score <= 1
    lexical = openai_client.vector_stores.search(store_id, query="bread dough", ranking_options={"hybrid_search": {"embedding_weight": 0, "text_weight": 1}})
    assert [r.file_id for r in lexical.data] == [ids["cooking.txt"]]  # only the chunk holding the words
    vector_only = openai_client.vector_stores.search(store_id, query="bread dough", ranking_options={"hybrid_search": {"embedding_weight": 1, "text_weight": 0}})
    assert len(vector_only.data) == 3  # every chunk has a similarity
    assert len(openai_client.vector_stores.search(store_id, query=["Jupiter", "Atlantis"], max_num_results=2).data) == 2


def test_search_filters_on_attributes(openai_client, searchable):
    store_id, ids = searchable
    def found(filters):
        return {r.file_id for r in openai_client.vector_stores.search(store_id, query="capital", filters=filters).data}
    assert found({"type": "eq", "key": "author", "value": "ada"}) == {ids["atlantis.txt"], ids["planets.txt"]}
    assert found({"type": "and", "filters": [{"type": "eq", "key": "author", "value": "ada"}, {"type": "gte", "key": "year", "value": 2022}]}) == {ids["atlantis.txt"]}
    assert found({"type": "or", "filters": [{"type": "lt", "key": "year", "value": 2022}, {"type": "in", "key": "author", "value": ["grace"]}]}) == {ids["planets.txt"], ids["cooking.txt"]}
    assert found({"type": "nin", "key": "author", "value": ["ada"]}) == {ids["cooking.txt"]}
    assert found({"type": "in", "key": "author", "value": "grace"}) == {ids["cooking.txt"]}  # one value: a list of one
    assert found({"type": "eq", "key": "missing", "value": "x"}) == set()  # as on OpenAI: no file has it, none matches
    assert found({"type": "gt", "key": "author", "value": 3}) == set()  # a string is not compared with a number


@pytest.mark.parametrize(("body", "param"), [
    ({"query": ""}, "query"),
    ({"query": "x", "ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 0}}}, "ranking_options"),
    ({"query": "x", "max_num_results": 51}, "max_num_results"),
    ({"query": "x", "filters": {"type": "and", "filters": [{"type": "or", "filters": [{"type": "eq", "key": "a"}]}]}}, "filters.filters.0.filters.0"),
    ({"query": "x", "rewrite_query": True}, "rewrite_query"),
])
def test_bad_searches_are_400(api, searchable, body, param):
    store_id, _ = searchable
    error = assert_openai_error(api.post(f"/vector_stores/{store_id}/search", json=body), 400)
    assert error["param"] == param, error


def test_a_store_still_ingesting_answers_from_what_is_ready(openai_client):
    store = openai_client.vector_stores.create(name="busy")
    ready = openai_client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("ready.txt", b"The capital of Atlantis is Poseidonia."))
    long = openai_client.files.create(file=("long.txt", ("Atlantis had many harbours and temples. " * 4000).encode()), purpose="assistants")
    openai_client.vector_stores.files.create(file_id=long.id, vector_store_id=store.id)
    assert openai_client.vector_stores.retrieve(store.id).status == "in_progress"
    page = openai_client.vector_stores.search(store.id, query="capital of Atlantis")
    done = {f.id for f in openai_client.vector_stores.files.list(vector_store_id=store.id, filter="completed")}
    assert page.data and page.data[0].file_id == ready.id and {r.file_id for r in page.data} <= done
    assert settled(openai_client, store.id).file_counts.completed == 2
