"""Agent sessions against jan-server and llama-server in one run: many conversations sharing a long system prompt,
more than the slots, each turn resending the whole conversation (issue 32's workload).

Both servers are up at once on the bundled model with the same threads, but only one is sent work at a time: two
servers computing together on 2 cores would each time the other's load as well (and jan-server's decoding threads
run nicer than llama-server's, so it would lose that contest). The turns go round the sessions (every session's
first turn, then every second turn, ...); each round goes to one server, `--concurrency` sessions at a time, then to
the other, the order alternating by round, `--settle` seconds apart (so what a server does once idle is not timed
against the other). Each turn adds `--turn-tokens` of fresh text: with more sessions than
slots, a session's cells have left its slot by its next turn. llama-server runs at its defaults (4 slots sharing the
model's trained context, 8 GiB host prompt cache); jan-server with `--slots` slots sharing its default context
(the trained one), or `--ctx-len` cells. Printed: first-turn and later-turn TTFT p50/p90 of each, the ratio; two
TTFTs on jan-server with nothing else running: reading `--turn-tokens` tokens into an empty context, and a later
turn whose conversation is in its slot (the limit a later turn can reach: its new tokens attend over the whole
conversation); and jan-server's prompt tokens read and restored. With `--restart`,
jan-server is then restarted on the same data dir: the next turn of each of `--restart-sessions` sessions (restored
from disk) against the same conversation read cold (its system prompt changed at the start, so nothing cached
matches).

    python bench/agent_sessions.py --llama-server PATH [--sessions 12] [--prefix-tokens 2000] [--turns 4]
        [--turn-tokens 170] [--concurrency 2] [--answer-tokens 32] [--restart]

Try it small: `--sessions 3 --prefix-tokens 200 --turns 2 --turn-tokens 30 --answer-tokens 8`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.chat_bench import chat_stream as stream  # noqa: E402
from bench.side_by_side import build_llama_server, client_of, fresh_text  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer, free_port  # noqa: E402


#: Seconds a server may take to stop: jan-server then writes its slots' cells to the prompt cache's disk tier, which
#: LiveServer's default 20 s (then SIGKILL) may cut short on a loaded machine (those conversations would then
#: restore only an older, shorter entry after the restart).
STOP_TIMEOUT = 600


def start_jan(data_dir: Path, args) -> LiveServer:
    server = LiveServer(data_dir).start()
    settings = {"n_parallel": args.slots, "n_threads": args.threads, **({"ctx_len": args.ctx_len} if args.ctx_len else {})}
    httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json=settings, timeout=600).raise_for_status()
    return server


def start_llama(data_dir: Path, binary: Path, args) -> LiveServer:
    port = free_port()
    command = [str(binary), "-m", str(bundled_weights()), "-t", str(args.threads), "--no-webui", "--host", "127.0.0.1", "--port", str(port)]
    return LiveServer(data_dir, command=command, port=port).start()


def jan_stats(server: LiveServer) -> dict:
    return httpx.get(f"{server.api_url}/models/{BUNDLED_MODEL_ID}", timeout=60).json()["metadata"]


def run_sessions(servers: dict[str, LiveServer], system: str, args, rng: random.Random) -> tuple[dict, dict]:
    """Every session's turns on every server, a round of turns (every session's turn t) on one server, then on the
    other; returns {server: {turn: [TTFT, ...]}} and each server's conversations (messages by session)."""
    ttfts = {name: {} for name in servers}
    conversations = {name: {session: [{"role": "system", "content": system}] for session in range(args.sessions)} for name in servers}
    texts = {session: [fresh_text(args.turn_tokens, rng) for _ in range(args.turns)] for session in range(args.sessions)}

    def take_turn(name: str, session: int, turn: int) -> float:
        messages = conversations[name][session]
        messages.append({"role": "user", "content": texts[session][turn - 1]})
        with client_of(servers[name]) as client:
            _, ttft, _, answer = stream(client, messages, args.answer_tokens)
        messages.append({"role": "assistant", "content": answer})
        return ttft

    with ThreadPoolExecutor(args.concurrency) as pool:
        for turn in range(1, args.turns + 1):
            for name in list(servers) if turn % 2 else list(servers)[::-1]:
                ttfts[name][turn] = list(pool.map(lambda session: take_turn(name, session, turn), range(args.sessions)))
                time.sleep(args.settle)
    return ttfts, conversations


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def alone(server: LiveServer, tokens: int, rng: random.Random, times: int = 3) -> float:
    """The median TTFT of reading `tokens` tokens of fresh text, nothing else."""
    with client_of(server) as client:
        return statistics.median(stream(client, [{"role": "user", "content": fresh_text(tokens, rng)}], 1)[1] for _ in range(times))


def in_slot(server: LiveServer, conversations: dict, args, rng: random.Random, times: int = 3) -> float:
    """The median TTFT of a later turn whose conversation's cells are in its slot, nothing else running: the work
    left once a session's cells are restored (its new tokens, attending over the conversation)."""
    ttfts = []
    with client_of(server) as client:
        for session in range(times):
            messages = list(conversations[session])
            for _ in range(2):  # the first turn puts its cells back in a slot; the second is timed
                messages.append({"role": "user", "content": fresh_text(args.turn_tokens, rng)})
                _, ttft, _, answer = stream(client, messages, args.answer_tokens)
                messages.append({"role": "assistant", "content": answer})
            ttfts.append(ttft)
    return statistics.median(ttfts)


def restart(data_dir: Path, conversations: dict, args, rng: random.Random) -> tuple[list[float], list[float]]:
    """jan-server restarted on its data dir: the next turn of some sessions, restored from disk, and the same
    conversation read cold."""
    server = start_jan(data_dir, args)
    restored, cold = [], []
    try:
        with client_of(server) as client:
            for session in range(min(args.restart_sessions, args.sessions)):
                messages = conversations[session] + [{"role": "user", "content": fresh_text(args.turn_tokens, rng)}]
                before = jan_stats(server)
                restored.append(stream(client, messages, 1)[1])
                after = jan_stats(server)
                print(f"session {session}: {after['restored_prompt_tokens'] - before['restored_prompt_tokens']} prompt tokens "
                      f"restored, {after['prompt_tokens_read'] - before['prompt_tokens_read']} read (its new message)")
                changed = [{"role": "system", "content": f"{rng.choice('ABCDEFGH')}{rng.randrange(10**6)} " + messages[0]["content"]}]
                cold.append(stream(client, changed + messages[1:], 1)[1])
        stats = jan_stats(server)
        print(f"after the restart: {stats['restored_prompt_tokens']} prompt tokens restored, {stats['prompt_tokens_read']} read")
    finally:
        server.stop(timeout=STOP_TIMEOUT)
    return restored, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path, help="the llama-server binary (else built into the cache)")
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--prefix-tokens", type=int, default=2000, help="tokens of the system prompt every session shares")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--turn-tokens", type=int, default=170, help="tokens of fresh text each turn adds")
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2, help="sessions running at a time")
    parser.add_argument("--slots", type=int, default=4, help="jan-server's n_parallel (llama-server's default is 4)")
    parser.add_argument("--ctx-len", type=int, help="jan-server's cells, shared by its slots (default: the model's own)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between one server's round and the other's, "
                        "for what a server does once idle (jan-server saves its idle slots' cells) to end untimed")
    parser.add_argument("--restart", action="store_true", help="then measure jan-server's restart from disk")
    parser.add_argument("--restart-sessions", type=int, default=4)
    args = parser.parse_args()
    binary = args.llama_server or build_llama_server()
    rng = random.Random(time.time_ns())
    system = "You are a coding agent. These are your tools and rules:\n" + fresh_text(args.prefix_tokens, rng)
    with tempfile.TemporaryDirectory(prefix="agent-sessions-") as tmp:
        servers: dict[str, LiveServer] = {}
        try:
            servers["jan-server"] = start_jan(Path(tmp) / "jan-data", args)
            servers["llama-server"] = start_llama(Path(tmp) / "llama-data", binary, args)
            ttfts, conversations = run_sessions(servers, system, args, rng)
            reference = alone(servers["jan-server"], args.turn_tokens, rng)
            floor = in_slot(servers["jan-server"], conversations["jan-server"], args, rng)
            stats = jan_stats(servers["jan-server"])
        finally:
            for server in servers.values():
                server.stop(timeout=STOP_TIMEOUT)
        print(f"\n{args.sessions} sessions x {args.turns} turns, {args.concurrency} at a time, ~{args.prefix_tokens}-token shared "
              f"system prompt, ~{args.turn_tokens} new tokens a turn, {args.answer_tokens}-token answers, {args.threads} threads\n")
        print("| TTFT, s | llama-server | jan-server | ratio |\n|---|---:|---:|---:|")
        for label, turns in (("first turn", [1]), ("later turns", range(2, args.turns + 1))):
            for share, name in ((0.5, "p50"), (0.9, "p90")):
                figures = {server: percentile([t for turn in turns for t in ttfts[server][turn]], share) for server in ttfts}
                print(f"| {label} {name} | {figures['llama-server']:.2f} | {figures['jan-server']:.2f} | "
                      f"{figures['llama-server'] / figures['jan-server']:.2f} |")
        later = statistics.median(t for turn in range(2, args.turns + 1) for t in ttfts["jan-server"][turn])
        print(f"\njan-server, nothing else running: reading ~{args.turn_tokens} tokens into an empty context {reference:.2f} s "
              f"(later-turn p50 / that: {later / reference:.2f}); a later turn in its slot {floor:.2f} s (later-turn p50 / that: "
              f"{later / floor:.2f})")
        print(f"jan-server prompt tokens: {stats['prompt_tokens_read']} read, {stats['cached_prompt_tokens']} reused "
              f"({stats['restored_prompt_tokens']} restored from the host cache)")
        if args.restart:
            restored, cold = restart(Path(tmp) / "jan-data", conversations["jan-server"], args, rng)
            print(f"restart: next turn restored from disk, TTFT p50 {statistics.median(restored):.2f} s; the same read cold "
                  f"{statistics.median(cold):.2f} s; ratio {statistics.median(cold) / statistics.median(restored):.2f}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
