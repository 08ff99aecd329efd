"""Mixed load: N concurrent clients doing CRUD on threads, messages and assistants plus short chat completions,
for a fixed time, against one real server on loopback. Reports throughput, p50/p99 latency per operation,
error counts, and lost writes: afterwards every write that got a 2xx is read back.

    python bench/load.py [--clients 32] [--seconds 30] [--chat-share 0.05] [--max-tokens 4] [--seed 1]

Exit status 1 if any request got a 5xx or any acknowledged write is missing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.live_server import LiveServer  # noqa: E402

MODEL = "smollm2-135m-instruct"
#: Relative weights of the CRUD operations; chat gets --chat-share of all requests on top.
CRUD_MIX = {"create_thread": 10, "create_message": 35, "list_messages": 15, "get_thread": 10, "modify_thread": 10,
            "list_threads": 5, "create_assistant": 5, "get_assistant": 5, "delete_scratch_thread": 5}


@dataclass
class Client:
    """One client's own threads and the writes the server acknowledged."""

    index: int
    rng: random.Random
    threads: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # thread -> message ids
    metadata: dict[str, dict] = field(default_factory=dict)  # thread -> the last acknowledged metadata
    assistants: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    writes: int = 0


def request(client: Client, http: httpx.Client, name: str, method: str, path: str, **kwargs) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TransportError:
        client.transport_errors += 1
        return None
    client.latencies[name].append(time.perf_counter() - start)
    client.statuses[response.status_code] += 1
    return response


def ok(response: httpx.Response | None) -> bool:
    return response is not None and 200 <= response.status_code < 300


def step(client: Client, http: httpx.Client, chat_share: float, max_tokens: int) -> None:
    rng, n = client.rng, client.index
    if rng.random() < chat_share:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Say a number from client {n}."}], "max_tokens": max_tokens}
        request(client, http, "chat", "POST", "/chat/completions", json=body)
        return
    action = rng.choices(list(CRUD_MIX), weights=list(CRUD_MIX.values()))[0]
    if not client.threads and action != "create_assistant":
        action = "create_thread"
    thread = rng.choice(client.threads) if client.threads else None
    if action == "create_thread":
        response = request(client, http, action, "POST", "/threads", json={"metadata": {"client": str(n), "v": "0"}})
        if ok(response):
            client.threads.append(response.json()["id"])
            client.metadata[client.threads[-1]] = {"client": str(n), "v": "0"}
            client.writes += 1
    elif action == "create_message":
        response = request(client, http, action, "POST", f"/threads/{thread}/messages", json={"role": "user", "content": f"c{n} m{rng.random()}"})
        if ok(response):
            client.messages[thread].append(response.json()["id"])
            client.writes += 1
    elif action == "list_messages":
        request(client, http, action, "GET", f"/threads/{thread}/messages", params={"limit": 20})
    elif action == "get_thread":
        request(client, http, action, "GET", f"/threads/{thread}")
    elif action == "modify_thread":
        metadata = {"client": str(n), "v": str(rng.randrange(10**9))}
        if ok(request(client, http, action, "POST", f"/threads/{thread}", json={"metadata": metadata})):
            client.metadata[thread] = metadata
            client.writes += 1
    elif action == "list_threads":
        request(client, http, action, "GET", "/threads", params={"limit": 20})
    elif action == "create_assistant":
        response = request(client, http, action, "POST", "/assistants", json={"model": MODEL, "name": f"bench {n}"})
        if ok(response):
            client.assistants.append(response.json()["id"])
            client.writes += 1
    elif action == "get_assistant" and client.assistants:
        request(client, http, action, "GET", f"/assistants/{rng.choice(client.assistants)}")
    elif action == "delete_scratch_thread":
        created = request(client, http, "create_thread", "POST", "/threads", json={"title": "scratch"})
        if ok(created) and ok(request(client, http, action, "DELETE", f"/threads/{created.json()['id']}")):
            client.deleted.append(created.json()["id"])
            client.writes += 2


def run_client(client: Client, api_url: str, deadline: float, chat_share: float, max_tokens: int) -> None:
    with httpx.Client(base_url=api_url, timeout=120) as http:
        while time.monotonic() < deadline:
            step(client, http, chat_share, max_tokens)


def all_message_ids(http: httpx.Client, thread: str) -> set[str] | None:
    ids, after = set(), None
    while True:
        page = http.get(f"/threads/{thread}/messages", params={"limit": 100, "order": "asc", **({"after": after} if after else {})})
        if page.status_code != 200:
            return None
        body = page.json()
        ids |= {m["id"] for m in body["data"]}
        if not body["has_more"]:
            return ids
        after = body["last_id"]


def lost_writes(clients: list[Client], api_url: str) -> list[str]:
    """Read back every acknowledged write; describe each one that is missing or stale."""
    lost = []
    with httpx.Client(base_url=api_url, timeout=120) as http:
        for client in clients:
            for thread in client.threads:
                got = http.get(f"/threads/{thread}")
                if got.status_code != 200:
                    lost.append(f"thread {thread}: {got.status_code}")
                elif got.json()["metadata"] != client.metadata[thread]:
                    lost.append(f"thread {thread}: metadata {got.json()['metadata']} != {client.metadata[thread]}")
                present = all_message_ids(http, thread) or set()
                lost += [f"message {m} of {thread}" for m in client.messages[thread] if m not in present]
            lost += [f"assistant {a}" for a in client.assistants if http.get(f"/assistants/{a}").status_code != 200]
            lost += [f"deleted thread {t} is back" for t in client.deleted if http.get(f"/threads/{t}").status_code != 404]
    return lost


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values or [float("nan")])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--chat-share", type=float, default=0.05, help="fraction of requests that are chat completions")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jan-load-") as tmp:
        live = LiveServer(Path(tmp) / "data").start()
        try:
            warm = httpx.post(f"{live.api_url}/chat/completions", timeout=300,
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            warm.raise_for_status()  # loads the model before the clock starts
            clients = [Client(i, random.Random(args.seed * 1000 + i)) for i in range(args.clients)]
            deadline = time.monotonic() + args.seconds
            started = time.perf_counter()
            workers = [threading.Thread(target=run_client, args=(c, live.api_url, deadline, args.chat_share, args.max_tokens)) for c in clients]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - started
            lost = lost_writes(clients, live.api_url)
        finally:
            live.stop()

    statuses = sum((c.statuses for c in clients), Counter())
    latencies: dict[str, list[float]] = defaultdict(list)
    for client in clients:
        for name, values in client.latencies.items():
            latencies[name] += values
    everything = [v for values in latencies.values() for v in values]
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    transport = sum(c.transport_errors for c in clients)

    print(f"clients={args.clients} seconds={elapsed:.1f} chat_share={args.chat_share} max_tokens={args.max_tokens} seed={args.seed}")
    print(f"requests={len(everything)} throughput={len(everything) / elapsed:.1f} req/s "
          f"p50={percentile(everything, 50) * 1000:.1f} ms p99={percentile(everything, 99) * 1000:.1f} ms")
    print("| operation | requests | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name in sorted(latencies, key=lambda n: -len(latencies[n])):
        values = latencies[name]
        print(f"| {name} | {len(values)} | {percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} |")
    print(f"statuses={dict(sorted(statuses.items()))} 5xx={server_errors} transport_errors={transport}")
    print(f"acknowledged_writes={sum(c.writes for c in clients)} lost_writes={len(lost)}")
    for line in lost[:20]:
        print(f"  lost: {line}")
    sys.exit(1 if server_errors or lost or transport else 0)


if __name__ == "__main__":
    main()
