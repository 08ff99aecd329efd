"""Retrieval: recall@5 of hybrid search against vector-only and lexical-only on the labelled set that ships with the
tests (tests/data/retrieval: 20 short documents, 50 questions, each answered by one document), through a real
jan-server and the bundled model; then search latency (p50/p99) and memory at 10,000 and 100,000 chunks, in process
on a SQLite store filled with synthetic chunks (random unit vectors of the bundled model's width, texts of random
words), the query's embedding left out (one embedding call, measured by bench/embeddings_bench.py).

    python bench/retrieval.py [--sizes 10000,100000] [--queries 50] [--skip-recall]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from jan_server.retrieval.search import Searcher  # noqa: E402
from jan_server.storage.store import Store  # noqa: E402
from jan_server.storage.tables import files, vector_store_chunks, vector_store_files, vector_stores  # noqa: E402
from tests.live_server import LiveServer, openai_at  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "retrieval"
MODES = {"hybrid": (1, 1), "vector-only": (1, 0), "lexical-only": (0, 1)}
WIDTH = 576  # the bundled model's embedding width


def recall_at_5() -> dict[str, float]:
    questions = json.loads((DATA / "questions.json").read_text())
    with tempfile.TemporaryDirectory() as data_dir, LiveServer(Path(data_dir)) as server, openai_at(server.api_url) as client:
        store = client.vector_stores.create(name="labelled")
        documents = sorted((DATA / "documents").iterdir())
        batch = client.vector_stores.file_batches.upload_and_poll(store.id, files=[(path.name, path.read_bytes()) for path in documents])
        assert batch.file_counts.completed == len(documents), batch
        found = {}
        for mode, (embedding, text) in MODES.items():
            hits = 0
            for question in questions:
                options = {"hybrid_search": {"embedding_weight": embedding, "text_weight": text}}
                page = client.vector_stores.search(store.id, query=question["question"], max_num_results=5, ranking_options=options)
                hits += question["document"] in {result.filename for result in page.data}
            found[mode] = hits / len(questions)
        return found


WORDS = [f"w{n}" for n in range(5000)]


def filled(store: Store, size: int, rng: random.Random) -> str:
    """A store of `size` synthetic chunks (100 files), written straight into the tables."""
    store_id, now = f"vs_bench{size}", int(time.time())
    with store.engine.begin() as connection:
        connection.execute(insert(vector_stores), {"id": store_id, "created_at": now, "name": "bench", "metadata": {}, "last_active_at": now,
                                                  "embedding_model": "bench"})
        for n in range(100):
            file_id = f"file-bench{size}-{n}"
            connection.execute(insert(files), {"id": file_id, "created_at": now, "filename": f"{n}.txt", "purpose": "assistants", "bytes": 1})
            connection.execute(insert(vector_store_files), {"id": file_id, "vector_store_id": store_id, "created_at": now, "status": "completed",
                                                            "chunking_strategy": {}, "attributes": {"n": n}, "usage_bytes": 0})
        vectors = np.random.default_rng(size).standard_normal((size, WIDTH)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{"vector_store_id": store_id, "file_id": f"file-bench{size}-{i % 100}", "n": i,
                 "text": " ".join(rng.choices(WORDS, k=120)), "vector": vectors[i].tobytes()} for i in range(size)]
        for start in range(0, size, 5000):
            connection.execute(insert(vector_store_chunks), rows[start:start + 5000])
    return store_id


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    return f"p50 {statistics.median(samples) * 1000:7.2f} ms  p99 {samples[int(len(samples) * 0.99) - 1] * 1000:7.2f} ms"


def latency(sizes: list[int], queries: int) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{folder}/bench.db")
        searcher = Searcher(store, models=None)
        for size in sizes:
            store_id = filled(store, size, rng)
            start = time.perf_counter()
            matrix = searcher.matrix(store_id)
            load = time.perf_counter() - start
            allowed = np.ones(len(matrix.file_ids), dtype=bool)
            vector_times, lexical_times = [], []
            for _ in range(queries):
                query = np.random.default_rng(rng.randrange(2**32)).standard_normal(WIDTH).astype(np.float32)
                start = time.perf_counter()
                searcher.nearest(matrix, allowed, query / np.linalg.norm(query))
                vector_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                store.chunks.lexical(store_id, " ".join(rng.choices(WORDS, k=4)), 400)
                lexical_times.append(time.perf_counter() - start)
            print(f"{size:>7} chunks  vector {percentiles(vector_times)}  lexical {percentiles(lexical_times)}  "
                  f"matrix load {load:.2f} s, {matrix.vectors.nbytes / 2**20:.0f} MiB of vectors ({matrix.vectors.nbytes / size * 100_000 / 2**20:.0f} MiB per 100,000 chunks)")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--skip-recall", action="store_true")
    args = parser.parse_args()
    if not args.skip_recall:
        for mode, recall in recall_at_5().items():
            print(f"recall@5 {mode:<13} {recall:.2f}")
    latency([int(size) for size in args.sizes.split(",")], args.queries)


if __name__ == "__main__":
    main()
