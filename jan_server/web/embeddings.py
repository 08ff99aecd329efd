"""OpenAI embeddings: the request's inputs -> the model's embedder, its unit vectors -> OpenAI's `list` of
`embedding` objects, as floats or base64 (the little-endian float32 bytes, as OpenAI sends them)."""

from __future__ import annotations

import base64

import numpy as np

from jan_server.errors import InvalidRequestError
from jan_server.models import raw_prompt
from jan_server.models.batching import Runner


def create(runner: Runner, body: dict) -> dict:
    embedder = runner.embedder()
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != embedder.n_embd:
        raise InvalidRequestError(
            f"This model's embeddings have {embedder.n_embd} dimensions; it cannot make {dimensions}.",
            param="dimensions",
            code="unsupported_value",
        )
    vectors, tokens = embedder.embed(raw_prompt.listed(body["input"]))
    encode = as_base64 if body.get("encoding_format") == "base64" else as_floats
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(vector)} for index, vector in enumerate(vectors)],
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def as_floats(vector: np.ndarray) -> list[float]:
    return vector.tolist()


def as_base64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
