"""POST /v1/embeddings on the real SmolLM2 model, through the official `openai` package and raw HTTP; bodies checked
against OpenAI's published CreateEmbeddingResponse; an embedding-only model (settings.embedding) refuses text."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights
from tests.live_server import bundled_copy
from tests.openai_reference import assert_valid
from tests.test_app import assert_openai_error

MODEL = BUNDLED_MODEL_ID
DIMENSIONS = 576  # the bundled model's n_embd
TEXTS = ["A cat sat on the mat.", "Stock prices fell sharply today.", "A cat sat on the mat."]


@pytest.fixture(scope="module")
def llama():
    """The same GGUF in llama-cpp-python itself, embedding with mean pooling (the GGUF names none)."""
    import llama_cpp

    model = llama_cpp.Llama(
        str(bundled_weights()), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=512, n_threads=1, verbose=False
    )
    yield model
    model.close()


def vectors(response) -> list[np.ndarray]:
    return [np.array(item.embedding) for item in response.data]


def test_float_vectors_are_unit_length_and_validate(openai_client, api):
    response = openai_client.embeddings.create(model=MODEL, input="The food was delicious.", encoding_format="float")
    assert response.object == "list" and response.model == MODEL
    (item,) = response.data
    assert (item.object, item.index, len(item.embedding)) == ("embedding", 0, DIMENSIONS)
    assert abs(np.linalg.norm(item.embedding) - 1) < 1e-5
    assert response.usage.prompt_tokens == response.usage.total_tokens > 0
    assert_valid(api.post("/embeddings", json={"model": MODEL, "input": TEXTS}).json(), "CreateEmbeddingResponse")


def test_they_are_llama_cpp_pythons_own_mean_pooled_vectors(openai_client, llama):
    ours = vectors(openai_client.embeddings.create(model=MODEL, input=TEXTS[:2], encoding_format="float"))
    theirs = [np.array(vector) for vector in llama.embed(TEXTS[:2], normalize=True)]
    for mine, reference in zip(ours, theirs):
        assert float(mine @ reference) > 0.9999


def test_base64_is_little_endian_float32_of_the_same_vectors(openai_client, api):
    floats = vectors(openai_client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float"))
    raw = api.post("/embeddings", json={"model": MODEL, "input": TEXTS, "encoding_format": "base64"}).json()
    assert_valid({**raw, "data": [{**item, "embedding": [0.0]} for item in raw["data"]]}, "CreateEmbeddingResponse")
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in raw["data"]]
    assert all(np.array_equal(mine, vector.astype(np.float32)) for mine, vector in zip(decoded, floats))
    by_sdk = vectors(openai_client.embeddings.create(model=MODEL, input=TEXTS))  # the openai package asks for base64 itself
    assert all(np.allclose(mine, vector, atol=1e-7) for mine, vector in zip(by_sdk, floats))


def test_a_batch_embeds_each_input_as_alone_and_identical_texts_alike(openai_client, llama):
    batch = openai_client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [item.index for item in batch.data] == [0, 1, 2]
    first, other, same = vectors(batch)
    assert np.array_equal(first, same) and abs(np.linalg.norm(same) - 1) < 1e-5
    assert float(first @ other) < 0.999
    for text, vector in zip(TEXTS, (first, other, same)):
        alone = vectors(openai_client.embeddings.create(model=MODEL, input=text, encoding_format="float"))[0]
        assert float(alone @ vector) > 0.9999
    tokens = sum(len(llama.tokenize(text.encode())) for text in TEXTS)
    assert batch.usage.prompt_tokens == tokens == batch.usage.total_tokens


def test_many_inputs_in_one_request(openai_client):
    texts = [f"Sentence number {i} is about {'cats' if i % 2 else 'finance'}." for i in range(70)]  # more than one batch
    response = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [item.index for item in response.data] == list(range(70))
    got = vectors(response)
    assert all(abs(np.linalg.norm(vector) - 1) < 1e-5 for vector in got)
    assert float(got[1] @ got[3]) > float(got[1] @ got[2])  # cats nearer cats than finance


def test_token_inputs_embed_as_their_text(openai_client, llama):
    tokens = llama.tokenize(TEXTS[0].encode())
    text = vectors(openai_client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float"))[0]
    single = vectors(openai_client.embeddings.create(model=MODEL, input=tokens, encoding_format="float"))[0]
    listed = vectors(openai_client.embeddings.create(model=MODEL, input=[tokens, tokens], encoding_format="float"))
    assert all(float(text @ vector) > 0.9999 for vector in (single, *listed))


def test_dimensions_only_the_models_own(openai_client, api):
    assert len(openai_client.embeddings.create(model=MODEL, input="x y", dimensions=DIMENSIONS).data[0].embedding) == DIMENSIONS
    error = assert_openai_error(api.post("/embeddings", json={"model": MODEL, "input": "x y", "dimensions": 256}), 400)
    assert (error["param"], error["code"]) == ("dimensions", "unsupported_value")


@pytest.mark.parametrize(
    ("input", "param", "code"),
    [
        ("word " * 9000, "input", "context_length_exceeded"),
        ([[1, 2], [10**6]], "input", "invalid_token"),
    ],
)
def test_inputs_the_model_cannot_read_are_a_400(api, input, param, code):
    error = assert_openai_error(api.post("/embeddings", json={"model": MODEL, "input": input}), 400)
    assert (error["param"], error["code"]) == (param, code)


@pytest.mark.parametrize("input", ["", [], [""], [[]], ["ok", ""]])
def test_empty_inputs_are_refused_by_the_spec(api, input):
    error = assert_openai_error(api.post("/embeddings", json={"model": MODEL, "input": input}), 400)
    assert error["param"].startswith("input")


@pytest.fixture()
def embedding_model(server, api):
    """A model.json with `settings.embedding: true` next to a link to the bundled GGUF, under another id."""
    model_id = "smollm2-embed"
    bundled_copy(server.data_dir, model_id, {"id": model_id, "settings": {"embedding": True, "n_parallel": 1, "n_threads": 1}})
    yield model_id
    assert api.delete(f"/models/{model_id}").status_code == 200


def test_an_embedding_model_embeds_and_refuses_text(openai_client, api, embedding_model):
    embedded = vectors(openai_client.embeddings.create(model=embedding_model, input=TEXTS[0], encoding_format="float"))[0]
    bundled = vectors(openai_client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float"))[0]
    assert float(embedded @ bundled) > 0.9999  # the same weights
    chat = {"model": embedding_model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    for path, body in (("/chat/completions", chat), ("/completions", {"model": embedding_model, "prompt": "Hello", "max_tokens": 2})):
        error = assert_openai_error(api.post(path, json=body), 400)
        assert (error["param"], error["code"]) == ("model", "model_not_supported"), path
