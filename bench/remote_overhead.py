"""Remote-engine overhead: one stream from a jan-server upstream directly, against the same stream through a
second jan-server whose model has `"engine": "openai"` pointing at that upstream, in one run.

Measures tokens/s and time to first token (TTFT) of one stream (greedy, the same prompt, so both generate the
same tokens); best and median of --rounds rounds, alternating direct and forwarded. The targets (issue 14) are
forwarded ≥ 0.95× direct tokens/s and TTFT ≤ direct + 10 ms.

    python bench/remote_overhead.py [--rounds 5] [--max-tokens 128] [--n-threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.chat_bench import print_streams, rates, server_stream, ttfts  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

REMOTE_ID = "smollm2-remote"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-threads", type=int, default=None, help="the upstream's llama.cpp threads (default: every core)")
    args = parser.parse_args()
    threads = ("--n-threads", str(args.n_threads)) if args.n_threads else ()
    direct, forwarded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        with LiveServer(Path(tmp) / "upstream", args=threads) as upstream, LiveServer(Path(tmp) / "front") as front:
            limits = httpx.Limits(max_connections=8)
            with httpx.Client(base_url=upstream.api_url, timeout=600, limits=limits) as to_upstream, \
                    httpx.Client(base_url=front.api_url, timeout=600, limits=limits) as to_front:
                to_upstream.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
                to_front.post("/models", json={"id": REMOTE_ID, "engine": "openai",
                                               "settings": {"base_url": upstream.api_url, "model": BUNDLED_MODEL_ID}}).raise_for_status()
                server_stream(to_upstream, 8)  # warm up both paths (and the front's pooled connection)
                server_stream(to_front, 8, REMOTE_ID)
                for _ in range(args.rounds):
                    direct.append(server_stream(to_upstream, args.max_tokens))
                    forwarded.append(server_stream(to_front, args.max_tokens, REMOTE_ID))

    print(f"SmolLM2-135M-Instruct Q4_1, upstream threads {args.n_threads or os.cpu_count()}, {args.max_tokens} tokens per stream, "
          f"{args.rounds} rounds, tokens per stream: direct {direct[0][0]}, forwarded {forwarded[0][0]}")
    print_streams({"upstream directly": direct, "through jan-server (remote engine)": forwarded})
    print(f"forwarded / direct tokens/s: best {max(rates(forwarded)) / max(rates(direct)):.2f}, "
          f"median {statistics.median(rates(forwarded)) / statistics.median(rates(direct)):.2f} (target >= 0.95)")
    print(f"TTFT forwarded - direct: best {min(ttfts(forwarded)) - min(ttfts(direct)):+.1f} ms, "
          f"median {statistics.median(ttfts(forwarded)) - statistics.median(ttfts(direct)):+.1f} ms (target <= +10 ms)")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
