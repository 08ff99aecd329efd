"""What other sequences' cells cost a read in a unified KV cache: the backend alone (no scheduler, no HTTP) reads a
prompt into one sequence and decodes tokens one at a time, in a unified cache and in split ones, with the other
sequences empty or holding cells. With `--llama-server PATH`, llama-server's own `prompt_ms` for the same tokens.

    python bench/unified_kv.py [--prompt-tokens 1900] [--others 1500] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import llama_cpp  # noqa: E402
from llama_cpp._internals import LlamaModel  # noqa: E402

from jan_server.models.llama_backend import LlamaBackend  # noqa: E402
from jan_server.models.registry import bundled_weights  # noqa: E402
from tests.live_server import LiveServer, free_port  # noqa: E402

SLOTS = 8
CHUNK = 512


def tokens(count: int, rng: random.Random) -> list[int]:
    return [rng.randrange(1000, 40000) for _ in range(count)]


def read(backend: LlamaBackend, seq_id: int, prompt: list[int]) -> float:
    started = time.perf_counter()
    for start in range(0, len(prompt), CHUNK):
        backend.decode([(seq_id, start, prompt[start:start + CHUNK], start + CHUNK >= len(prompt))], set())
    return time.perf_counter() - started


def measure(unified: bool, n_ctx: int, others: int, prompt: list[int], threads: int, rng: random.Random) -> tuple[float, float]:
    """(seconds to read `prompt` into the last sequence, ms a token after it) with `others` cells in every other one."""
    model = LlamaModel(path_model=str(bundled_weights()), params=llama_cpp.llama_model_default_params(), verbose=False)
    backend = LlamaBackend(model, n_ctx=n_ctx, n_slots=SLOTS, n_batch=CHUNK, n_threads=threads, flash_attn=True, unified=unified)
    try:
        for seq_id in range(SLOTS - 1):
            if others:
                read(backend, seq_id, tokens(others, rng))
        seconds = read(backend, SLOTS - 1, prompt)
        started = time.perf_counter()
        for step in range(32):
            backend.decode([(SLOTS - 1, len(prompt) + step, [prompt[step]], True)], set())
        return seconds, (time.perf_counter() - started) / 32 * 1000
    finally:
        backend.close()


def llama_server_read(binary: Path, prompt: list[int], threads: int, data_dir: Path) -> float:
    port = free_port()
    command = [str(binary), "-m", str(bundled_weights()), "-c", str(2048 * SLOTS), "-np", str(SLOTS), "-t", str(threads),
               "--no-webui", "--host", "127.0.0.1", "--port", str(port)]
    with LiveServer(data_dir, command=command, port=port) as server:
        answer = httpx.post(f"{server.base_url}/completion", json={"prompt": prompt, "n_predict": 1, "cache_prompt": False}, timeout=600)
        return answer.json()["timings"]["prompt_ms"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=1900)
    parser.add_argument("--others", type=int, default=1500, help="cells each other sequence holds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--llama-server", type=Path)
    args = parser.parse_args()
    rng = random.Random(1)
    prompt = tokens(args.prompt_tokens, rng)
    print(f"| cache | other sequences hold | read {args.prompt_tokens} tokens, s | a token, ms |\n|---|---:|---:|---:|")
    for unified, n_ctx, name in ((True, 2048 * SLOTS, f"unified, {2048 * SLOTS} cells"), (False, 2048, f"split, {SLOTS} x 2048 cells")):
        for others in (0, args.others):
            seconds, token_ms = measure(unified, n_ctx, others, prompt, args.threads, rng)
            held = f"{SLOTS - 1} x {others} cells" if others else "nothing"
            print(f"| {name} | {held} | {seconds:.2f} | {token_ms:.1f} |", flush=True)
    if args.llama_server:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"llama-server's prompt_ms for the same {args.prompt_tokens} tokens: "
                  f"{llama_server_read(args.llama_server, prompt, args.threads, Path(tmp)):.2f} s")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
