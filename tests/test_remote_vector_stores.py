"""A vector store embedded by a remote model: a fake OpenAI upstream on 127.0.0.1 whose vectors are a hashed bag of
words (so the file sharing a query's words is nearest), and which fails (500) any input holding the word "explode"."""

from __future__ import annotations

import http.server
import json
import re
import threading
import zlib

import openai
import pytest

from tests.live_server import LiveServer, openai_at
from tests.test_remote import remote

DIMENSIONS = 64
FILES = {
    "zorbia.txt": "The capital of Zorbia is Quellton, a city of bridges.",
    "bananas.txt": "Bananas are a yellow fruit rich in potassium.",
    "rust.txt": "Rust programs compile to native machine code.",
}
VECTOR_ONLY = {"hybrid_search": {"embedding_weight": 1, "text_weight": 0}}


def bag_of_words(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        vector[zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
    return vector


class Embeddings(http.server.BaseHTTPRequestHandler):
    """OpenAI's POST /embeddings and GET /models, recording the inputs it was sent."""

    inputs: list[str] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.inputs.extend(texts)
        if any("explode" in text for text in texts):
            return self._answer(500, {"error": {"message": "the embedder exploded", "type": "server_error"}})
        self._answer(200, {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1},
                           "data": [{"object": "embedding", "index": i, "embedding": bag_of_words(text)} for i, text in enumerate(texts)]})

    def do_GET(self):
        self._answer(200, {"object": "list", "data": [{"id": "bag", "object": "model", "created": 0, "owned_by": "test"}]})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with LiveServer(tmp_path_factory.mktemp("front") / "data", args=("--n-threads", "1")) as live:
            client = openai_at(live.api_url)
            client.post("/models", body=remote("bag", f"http://127.0.0.1:{upstream.server_address[1]}/v1", model="bag", api_key_env=None),
                        cast_to=object)
            yield client
    finally:
        upstream.shutdown()


def test_a_store_embedded_by_a_remote_model_is_ingested_and_searched_through_its_upstream(api):
    store = api.vector_stores.create(name="remote", extra_body={"embedding_model": "bag"})
    assert store.model_extra["embedding_model"] == "bag"
    for name, text in FILES.items():
        assert api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(name, text.encode())).status == "completed"
    assert any("Quellton" in text for text in Embeddings.inputs)  # the chunks went to the upstream
    found = api.vector_stores.search(store.id, query="What is the capital of Zorbia?", ranking_options=VECTOR_ONLY)
    assert found.data[0].filename == "zorbia.txt"
    assert "Quellton" in found.data[0].content[0].text
    assert api.vector_stores.retrieve(store.id).model_extra["embedding_model"] == "bag"


def test_a_file_the_upstream_fails_to_embed_is_failed_and_the_store_still_answers(api):
    store = api.vector_stores.create(name="failing", extra_body={"embedding_model": "bag"})
    broken = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("boom.txt", b"This file will explode."))
    assert broken.status == "failed"
    assert broken.last_error.code == "server_error" and "exploded" in broken.last_error.message
    good = api.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("zorbia.txt", FILES["zorbia.txt"].encode()))
    assert good.status == "completed"
    assert api.vector_stores.search(store.id, query="Zorbia capital", ranking_options=VECTOR_ONLY).data[0].filename == "zorbia.txt"
    with pytest.raises(openai.InternalServerError) as failed:
        api.vector_stores.search(store.id, query="explode")
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "server_error" and "exploded" in failed.value.body["message"]


def test_chunks_for_a_remote_model_honour_the_static_sizes_by_estimated_tokens():
    from jan_server.retrieval import chunking
    text = "word " * 400  # 2,000 characters: 500 estimated tokens
    pieces = chunking.estimated(text, {"static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}})
    assert len(pieces) == 3  # windows at 0, 150, 300 (the last reaches the end)
    assert all(len(piece) <= 200 * chunking.CHARS_PER_TOKEN for piece in pieces)
