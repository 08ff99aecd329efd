"""This checkout against another one (e.g. the commit before a restructuring), in one run: inference and CRUD rates.

Starts one jan-server from each checkout (each with its own `.venv`, a fresh data dir and the bundled model),
then, round by round and alternating which goes first, measures on each: one stream's tokens/s and time to first
token, aggregate tokens/s of --streams concurrent streams, and requests/s of the store-backed endpoints next to
/health (the clients of bench/crud_load.py). Only one server works at a time; the idle one sleeps. Prints each
figure's median for both and the ratio this/other.

    python bench/compare_checkouts.py OTHER_CHECKOUT [--rounds 3] [--max-tokens 128] [--streams 8] [--crud-seconds 2]

The other checkout needs its venv: `cd OTHER && python3 -m venv .venv && .venv/bin/pip install -r requirements-test.lock && .venv/bin/pip install --no-deps -e .`.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import httpx  # noqa: E402

from chat_bench import concurrent, server_stream  # noqa: E402
from crud_load import Endpoint, load, seeded_endpoints  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.live_server import LiveServer, free_port  # noqa: E402


def start(checkout: Path, data_dir: Path) -> LiveServer:
    port = free_port()
    python = checkout / ".venv" / "bin" / "python"
    command = [str(python), "-m", "jan_server", "--data-dir", str(data_dir), "--port", str(port)]
    return LiveServer(data_dir, port=port, command=command, cwd=checkout).start()


def measure(server: LiveServer, crud: list[Endpoint], args, figures: dict[str, list[float]]) -> None:
    """One round on one server: the chat figures, then each CRUD endpoint."""
    with httpx.Client(base_url=server.api_url, timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        tokens, ttft, total = server_stream(client, args.max_tokens)
        figures["1 stream, tokens/s"].append(tokens / total)
        figures["1 stream, time to first token, ms"].append(ttft * 1000)
        tokens, wall = concurrent(client, args.streams, args.max_tokens)
        figures[f"{args.streams} streams, aggregate tokens/s"].append(tokens / wall)
    for endpoint in crud:
        result = load(server.base_url, server.process.pid, endpoint, 32, args.crud_seconds, 0.5, 200_000)
        if result.failed or result.lost:
            raise RuntimeError(f"{endpoint.name}: {result.failed} failed, {result.lost} lost")
        figures[f"{endpoint.name}, req/s"].append(result.rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--crud-seconds", type=float, default=2.0, help="measured seconds per endpoint per round")
    args = parser.parse_args()
    checkouts = {"other": args.other.resolve(), "this": HERE.parent}
    figures = {name: collections.defaultdict(list) for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        servers, crud = {}, {}
        try:
            for name, checkout in checkouts.items():
                servers[name] = start(checkout, Path(tmp) / name)
                with httpx.Client(base_url=servers[name].api_url, timeout=600) as client:
                    client.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
                    server_stream(client, 8)  # warm up
                crud[name] = seeded_endpoints(servers[name].api_url)
            for round_number in range(args.rounds):
                order = list(checkouts) if round_number % 2 == 0 else list(reversed(checkouts))
                for name in order:
                    measure(servers[name], crud[name], args, figures[name])
                print(f"  round {round_number + 1} done", file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.stop()
    print(f"\nthis: {checkouts['this']}\nother: {checkouts['other']}\n{args.rounds} rounds, medians; "
          f"{args.max_tokens} tokens per stream, 32 CRUD clients for {args.crud_seconds:g} s per endpoint per round\n")
    print(f"| {'figure':<44} | {'other':>8} | {'this':>8} | {'this/other':>10} |")
    print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|")
    for figure in figures["this"]:
        other, this = statistics.median(figures["other"][figure]), statistics.median(figures["this"][figure])
        print(f"| {figure:<44} | {other:8.1f} | {this:8.1f} | {this / other:10.2f} |")
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
