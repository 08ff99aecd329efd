"""Vectors from a remote model: its upstream's POST /embeddings (the client /v1/embeddings forwards through)."""

from __future__ import annotations

import numpy as np

from jan_server.errors import BadGatewayError
from jan_server.models.remote import Upstream


def embed(upstream: Upstream, texts: list[str]) -> list[np.ndarray]:
    """The texts' unit vectors, in order; an answer that is not OpenAI's list of embeddings is a 502."""
    answer = upstream.post("embeddings", {"input": texts, "encoding_format": "float"})
    try:
        rows = sorted(answer["data"], key=lambda row: row["index"])
        vectors = [np.asarray(row["embedding"], dtype=np.float32) for row in rows]
    except (KeyError, TypeError, ValueError):
        vectors = []
    if len(vectors) != len(texts) or any(vector.ndim != 1 or not vector.size for vector in vectors):
        raise BadGatewayError(f"The upstream of model '{upstream.model_id}' did not answer with one embedding per input.", code="upstream_error")
    return [vector / (np.linalg.norm(vector) or 1.0) for vector in vectors]
