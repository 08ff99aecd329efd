"""Messages API overhead: the same prompt and model streamed through chat completions and through Anthropic's
Messages API (a translation of the same request onto the same engine), alternating, in one run.

Measures tokens/s and time to first token (TTFT) of one stream (greedy, so both generate the same tokens); best and
median of --rounds rounds. The target (issue 28): the Messages layer costs under 5% of either.

    python bench/messages_overhead.py [--rounds 10] [--max-tokens 128] [--n-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.chat_bench import PROMPT, print_streams, rates, server_stream, ttfts  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402


def messages_stream(client: httpx.Client, max_tokens: int) -> tuple[int, float, float]:
    """(output tokens, TTFT, total seconds) of one streamed Messages request of PROMPT (greedy)."""
    body = {"model": BUNDLED_MODEL_ID, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start, first, tokens = time.perf_counter(), None, None
    with client.stream("POST", "/messages", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["type"] == "content_block_delta":
                first = first or time.perf_counter()
            elif event["type"] == "message_delta":
                tokens = event["usage"]["output_tokens"]
    if tokens is None:
        raise RuntimeError("a stream ended without message_delta")
    return tokens, (first or time.perf_counter()) - start, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    args = parser.parse_args()
    threads = ("--n-threads", str(args.n_threads)) if args.n_threads else ()
    chat, messages = [], []
    with tempfile.TemporaryDirectory() as tmp, LiveServer(Path(tmp) / "data", args=threads) as server:
        with httpx.Client(base_url=server.api_url, timeout=600) as client:
            client.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
            server_stream(client, 8)  # warm up both paths
            messages_stream(client, 8)
            for _ in range(args.rounds):
                chat.append(server_stream(client, args.max_tokens))
                messages.append(messages_stream(client, args.max_tokens))

    print(f"SmolLM2-135M-Instruct Q4_1, threads {args.n_threads or os.cpu_count()}, {args.max_tokens} tokens per stream, "
          f"{args.rounds} rounds, tokens per stream: chat {chat[0][0]}, messages {messages[0][0]}")
    print_streams({"chat completions": chat, "Anthropic Messages": messages})
    print(f"messages / chat tokens/s: best {max(rates(messages)) / max(rates(chat)):.3f}, "
          f"median {statistics.median(rates(messages)) / statistics.median(rates(chat)):.3f} (target >= 0.95)")
    print(f"messages / chat TTFT: best {min(ttfts(messages)) / min(ttfts(chat)):.3f}, "
          f"median {statistics.median(ttfts(messages)) / statistics.median(ttfts(chat)):.3f} (target <= 1.05)")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
