"""Ingestion throughput against raw embedding speed, one run, one server, the bundled model: a vector store's file
goes through the real ingest path (upload, extraction, chunking by the model's tokens, embedding in batches of 16,
the chunks written to the database), timed from the store's create to the file `completed`, in chunks/s; then the
same chunks (read back from the database) are sent to POST /v1/embeddings in the same batches of 16, in chunks/s.
Rounds alternate, and the best of each is compared (the machine is shared: the best is the least disturbed).

    python bench/ingestion.py [--chunks 48] [--chunk-tokens 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live_server import LiveServer, openai_at  # noqa: E402

MODEL = "smollm2-135m-instruct"
BATCH = 16  # as jan_server.retrieval.ingest.BATCH
WORDS = ["river", "stone", "harbour", "lantern", "orchard", "copper", "meadow", "violin", "glacier", "pepper", "falcon", "ribbon",
         "canyon", "marble", "thunder", "willow", "saddle", "quartz", "ember", "compass", "velvet", "tundra", "beacon", "cobalt"]


def document(words: int, rng: random.Random) -> str:
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(words // 12))


def ingest(client, text: str, chunk_tokens: int) -> tuple[float, str]:
    """Seconds from the store's create to its file completed, and the store id."""
    file = client.files.create(file=("bench.txt", text.encode()), purpose="assistants")
    start = time.perf_counter()
    store = client.vector_stores.create(name="bench", file_ids=[file.id], chunking_strategy={
        "type": "static", "static": {"max_chunk_size_tokens": chunk_tokens, "chunk_overlap_tokens": 0}})
    while (store := client.vector_stores.retrieve(store.id)).file_counts.in_progress:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    assert store.file_counts.completed == 1, store
    return elapsed, store.id


def raw(client, chunks: list[str]) -> float:
    """Seconds to embed the chunks through POST /v1/embeddings, BATCH at a time."""
    start = time.perf_counter()
    for at in range(0, len(chunks), BATCH):
        client.embeddings.create(model=MODEL, input=chunks[at:at + BATCH])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=48)
    parser.add_argument("--chunk-tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    text = document(args.chunks * args.chunk_tokens // 2, rng)  # about 2 tokens a word with the separators
    with tempfile.TemporaryDirectory() as data_dir, LiveServer(Path(data_dir)) as server, openai_at(server.api_url) as client:
        client.embeddings.create(model=MODEL, input="warm up")
        ingested, embedded, count = [], [], 0
        for _ in range(args.rounds):
            seconds, store_id = ingest(client, text, args.chunk_tokens)
            with sqlite3.connect(Path(data_dir) / "jan.db") as db:
                chunks = [row[0] for row in db.execute("SELECT text FROM vector_store_chunks WHERE vector_store_id = ? ORDER BY n", (store_id,))]
            count = len(chunks)
            ingested.append(count / seconds)
            embedded.append(count / raw(client, chunks))
            client.vector_stores.delete(store_id)
    print(f"{count} chunks of {args.chunk_tokens} tokens, batches of {BATCH}, {args.rounds} rounds")
    print(f"ingestion      {max(ingested):8.1f} chunks/s  (rounds: {', '.join(f'{value:.1f}' for value in ingested)})")
    print(f"raw embeddings {max(embedded):8.1f} chunks/s  (rounds: {', '.join(f'{value:.1f}' for value in embedded)})")
    print(f"ratio          {max(ingested) / max(embedded):8.2f}")


if __name__ == "__main__":
    main()
