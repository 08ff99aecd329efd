"""Hybrid search over a vector store: exact cosine similarity of the query's vector against every chunk's (float32,
numpy, the store's matrix cached in memory until its chunks change) and the database's full-text ranking (SQLite FTS5
BM25 or PostgreSQL's), fused by weighted reciprocal rank fusion, as OpenAI's `hybrid_search` weights describe.

A result's score is its fused score over the best one possible (first in both rankings): 1.0 at most. Only the
chunks of files already ingested exist, so a store still ingesting answers from what is ready.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from jan_server.errors import InvalidRequestError
from jan_server.retrieval import filters as attribute_filters
from jan_server.retrieval import upstream as remote
from jan_server.storage.store import Store

#: Reciprocal rank fusion's constant (Cormack et al.; the value most systems use).
RRF_K = 60
#: How deep each ranking is read before fusing.
DEPTH = 100


@dataclass
class Matrix:
    """A store's chunk vectors: row i is chunk seqs[i] of file file_ids[i]."""
    version: tuple[int, int]
    seqs: np.ndarray
    file_ids: list[str]
    vectors: np.ndarray


class Searcher:
    def __init__(self, store: Store, models):
        self.store = store
        self.models = models
        self._matrices: dict[str, Matrix] = {}
        self._lock = threading.Lock()

    def search(self, store_id: str, body: dict) -> dict:
        row = self.store.vector_stores.touch(store_id)
        queries = [body["query"]] if isinstance(body["query"], str) else list(body["query"])
        ranking = body.get("ranking_options") or {}
        weights = ranking.get("hybrid_search") or {"embedding_weight": 1.0, "text_weight": 1.0}
        results = self.ranked(store_id, row["embedding_model"], queries, body.get("filters"), weights, body.get("max_num_results", 10))
        threshold = ranking.get("score_threshold", 0)
        return {"object": "vector_store.search_results.page", "search_query": queries,
                "data": [result for result in results if result["score"] >= threshold], "has_more": False, "next_page": None}

    def ranked(self, store_id: str, model_id: str, queries: list[str], filters: dict | None, weights: dict, limit: int) -> list[dict]:
        """The best `limit` chunks for the queries, as OpenAI's search result items."""
        files = self.store.chunks.files(store_id)
        if filters is not None:
            files = {file_id: f for file_id, f in files.items() if attribute_filters.matches(filters, f["attributes"])}
        matrix = self.matrix(store_id)
        allowed = np.fromiter((file_id in files for file_id in matrix.file_ids), dtype=bool, count=len(matrix.file_ids))
        w_vector, w_text = float(weights["embedding_weight"]), float(weights["text_weight"])
        if w_vector < 0 or w_text < 0 or w_vector + w_text <= 0:
            raise InvalidRequestError("hybrid_search weights must not be negative, nor both zero.", param="ranking_options")
        fused: dict[int, float] = {}
        for query in queries:
            rankings = []
            if w_vector and allowed.any():
                rankings.append((w_vector, self.nearest(matrix, allowed, self.embed(model_id, query))))
            if w_text:
                allowed_seqs = set(matrix.seqs[allowed].tolist())
                rankings.append((w_text, [seq for seq in self.store.chunks.lexical(store_id, query, DEPTH * 4) if seq in allowed_seqs][:DEPTH]))
            for weight, seqs in rankings:
                for rank, seq in enumerate(seqs):
                    fused[seq] = fused.get(seq, 0.0) + weight / (RRF_K + rank + 1)
        best = (w_vector + w_text) * len(queries) / (RRF_K + 1)
        top = sorted(fused, key=lambda seq: (-fused[seq], seq))[:limit]
        texts = self.store.chunks.texts(top)
        owner = dict(zip(matrix.seqs.tolist(), matrix.file_ids))
        return [{"file_id": owner[seq], "filename": files[owner[seq]]["filename"], "score": round(min(1.0, fused[seq] / best), 6),
                 "attributes": files[owner[seq]]["attributes"] or {}, "content": [{"type": "text", "text": texts[seq]}]}
                for seq in top if seq in texts and owner.get(seq) in files]

    def embed(self, model_id: str, query: str) -> np.ndarray:
        """The query's vector; a query longer than the model's context is cut to it (its words all count for the
        full-text ranking). A remote model's comes from its upstream: a failure there is the search's 502 or 504."""
        if upstream := self.models.remote_for(model_id):
            return remote.embed(upstream, [query])[0]
        with self.models.serving(model_id) as runner:
            embedder = runner.embedder()
            tokens = embedder.model.tokenize(query.encode("utf-8"), add_bos=True, special=False)[: embedder.n_ctx]
            vectors, _ = embedder.embed([tokens])
        return vectors[0]

    @staticmethod
    def nearest(matrix: Matrix, allowed: np.ndarray, query: np.ndarray) -> list[int]:
        """The seqs of the allowed chunks by cosine similarity (the vectors are unit vectors), best first."""
        scores = np.where(allowed, matrix.vectors @ query.astype(np.float32), -np.inf)
        count = min(DEPTH, int(allowed.sum()))
        top = np.argpartition(-scores, count - 1)[:count]
        return matrix.seqs[top[np.argsort(-scores[top], kind="stable")]].tolist()

    def matrix(self, store_id: str) -> Matrix:
        """The store's vectors, read again only when its chunks changed."""
        version = self.store.chunks.version(store_id)
        with self._lock:
            cached = self._matrices.get(store_id)
            if cached is not None and cached.version == version:
                return cached
        rows = self.store.chunks.vectors(store_id)
        vectors = np.frombuffer(b"".join(row["vector"] for row in rows), dtype="<f4")
        width = len(rows[0]["vector"]) // 4 if rows else 0
        matrix = Matrix(version, np.array([row["seq"] for row in rows], dtype=np.int64), [row["file_id"] for row in rows],
                        vectors.reshape(len(rows), width) if rows else np.zeros((0, 0), dtype=np.float32))
        with self._lock:
            self._matrices[store_id] = matrix
        return matrix

    def forget(self, store_id: str) -> None:
        with self._lock:
            self._matrices.pop(store_id, None)
