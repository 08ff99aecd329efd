"""Requests per second for the store-backed thread and message endpoints next to /health, on one real server.

Starts jan-server on a free loopback port with a fresh data dir, then loads each endpoint in turn with N
concurrent keep-alive clients for a fixed time (and at most --max-requests). The time is split into --rounds
rounds; each round runs /health, then every other endpoint, so /health is measured alongside each of them and a
shared machine's changing load weighs on both sides of a ratio alike.

By default the server uses SQLite (the data dir's jan.db). `--postgres` runs a second server on a fresh database of
a PostgreSQL (JAN_TEST_POSTGRES_URL's, else one started with tests/postgres.py) and `--database-url URL` on any
other; each round then loads every server in turn, and a last table sets their rates side by side.

    python bench/crud_load.py [--clients 32] [--seconds 10] [--rounds 5] [--warmup 0.5] [--max-requests 200000]
                              [--postgres] [--database-url URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.storage.paging import Page  # noqa: E402
from jan_server.storage.store import Store  # noqa: E402
from tests import postgres  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: Answers other than the expected status.
    failed: int = 0
    #: Connections refused or reset, and requests that got no answer before the timeout.
    lost: int = 0
    #: CPU seconds the server process spent during the whole run (warm-up included), and the requests it answered.
    server_cpu: float = 0.0
    answered: int = 0

    @property
    def cpu_per_request_ms(self) -> float:
        """Server CPU per request: unlike req/s, barely moved by other load on a shared machine."""
        return self.server_cpu / self.answered * 1000 if self.answered else float("nan")

    def add(self, other: Result) -> None:
        """Count another run of the same endpoint into this one."""
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.failed += other.failed
        self.lost += other.lost
        self.server_cpu += other.server_cpu
        self.answered += other.answered

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


@dataclass
class Endpoint:
    name: str
    method: str
    path: str
    body: dict | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(base_url: str, pid: int, endpoint: Endpoint, clients: int, seconds: float, warmup: float, max_requests: int) -> Result:
    """Run `clients` keep-alive connections, each sending requests back to back; count only after warm-up."""
    result = Result(endpoint.name)
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    measure_from, stop_at = started + warmup, started + warmup + seconds
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    request = encode_request(endpoint, f"{host}:{port}")
    budget = [max_requests]

    async def client() -> None:
        connection = None
        while (now := time.perf_counter()) < stop_at and (now < measure_from or budget[0] > 0):
            try:
                connection = connection or await asyncio.open_connection(host, port)
                status, keep_alive = await exchange(*connection, request)
                if not keep_alive:
                    connection = connection[1].close()
            except (OSError, asyncio.IncompleteReadError):
                connection, status = None, None
            done = time.perf_counter()
            result.answered += status is not None
            if now < measure_from:
                continue
            budget[0] -= 1
            if status is None:
                result.lost += 1
            elif status == 200:
                result.latencies.append(done - now)
            else:
                result.failed += 1
        if connection:
            connection[1].close()

    async def run_clients() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(run_clients())
    result.seconds = min(time.perf_counter(), stop_at) - measure_from
    result.server_cpu = cpu_seconds(pid) - cpu_before
    return result


def encode_request(endpoint: Endpoint, host: str) -> bytes:
    body = json.dumps(endpoint.body).encode() if endpoint.body is not None else b""
    head = f"{endpoint.method} {endpoint.path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """Send one request on a keep-alive connection and read the whole response: its status code, and whether
    the connection stays open."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split(" ", 2)[1]), headers.get("connection") != "close"


def seed(api_url: str) -> tuple[str, str]:
    """A thread with five messages to read, and an empty one to post messages into."""
    with httpx.Client(base_url=api_url, timeout=30) as http:
        messages = [{"role": "user", "content": f"Message {n}: how does AI work?"} for n in range(5)]
        read = http.post("/threads", json={"messages": messages, "metadata": {"bench": "read"}, "title": "Bench"})
        write = http.post("/threads", json={"metadata": {"bench": "write"}})
        return read.raise_for_status().json()["id"], write.raise_for_status().json()["id"]


def seeded_endpoints(api_url: str) -> list[Endpoint]:
    """/health first, then the store-backed endpoints, on freshly seeded threads."""
    read_id, write_id = seed(api_url)
    return [
        Endpoint("GET /health", "GET", "/health"),
        Endpoint("GET /v1/threads/{id}", "GET", f"/v1/threads/{read_id}"),
        Endpoint("GET /v1/threads/{id}/messages", "GET", f"/v1/threads/{read_id}/messages"),
        Endpoint("POST /v1/threads", "POST", "/v1/threads", {"metadata": {"bench": "load"}}),
        Endpoint("POST /v1/threads/{id}/messages", "POST", f"/v1/threads/{write_id}/messages", {"role": "user", "content": "Hello, what is AI?"}),
    ]


def store_costs(url: str | None, calls: int = 2000) -> dict[str, float]:
    """Microseconds per call of the store alone (in this process, one thread) on a fresh database like `url`'s
    (None: SQLite): its share of a request's cost."""
    with tempfile.TemporaryDirectory(prefix="crud-store-") as tmp:
        store = Store.open(fresh_database(url) or f"sqlite:///{tmp}/jan.db")
        thread_id = store.threads.create([{"role": "user", "content": f"Message {n}"} for n in range(5)], {"bench": "read"})["id"]
        operations = {
            "get_thread": lambda: store.threads.get(thread_id),
            "list_messages": lambda: store.messages.list(thread_id, Page()),
            "create_thread": lambda: store.threads.create(metadata={"bench": "load"}),
            "create_message": lambda: store.messages.create(thread_id, {"role": "user", "content": "Hello, what is AI?"}),
        }
        costs = {}
        for name, operation in operations.items():
            for _ in range(calls // 10):
                operation()
            started = time.perf_counter()
            for _ in range(calls):
                operation()
            costs[name] = (time.perf_counter() - started) / calls * 1e6
        store.close()
    return costs


def fresh_database(url: str | None) -> str | None:
    """A new empty database on the PostgreSQL server of `url`; any other URL as it is (None: the data dir's SQLite)."""
    return postgres.create_database(url) if url and url.startswith("postgresql") else url


def kind(url: str | None) -> str:
    dialect = (url or "sqlite").split(":", 1)[0].split("+")[0]
    return {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(dialect, dialect)


def print_table(title: str, results: list[Result], args) -> None:
    baseline = results[0].rate
    print(f"\n{title}: {args.clients} concurrent clients, {args.seconds:g} s per endpoint in {args.rounds} rounds, each after {args.warmup:g} s warm-up\n")
    print(f"| {'endpoint':<32} | {'req/s':>7} | {'vs /health':>10} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} | {'lost':>4} | {'server CPU ms/req':>17} |")
    print(f"|{'-' * 34}|{'-' * 8}:|{'-' * 11}:|{'-' * 8}:|{'-' * 8}:|{'-' * 7}:|{'-' * 5}:|{'-' * 18}:|")
    for result in results:
        print(
            f"| {result.name:<32} | {result.rate:7.0f} | {result.rate / baseline:10.0%} | {result.percentile(50):7.1f} "
            f"| {result.percentile(99):7.1f} | {result.failed:6d} | {result.lost:4d} | {result.cpu_per_request_ms:17.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per endpoint, over all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of /health then each endpoint")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured time before each endpoint's run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop one run (an endpoint in one round) after this many")
    parser.add_argument("--postgres", action="store_true", help="also on a PostgreSQL: JAN_TEST_POSTGRES_URL's, else one started here")
    parser.add_argument("--database-url", action="append", default=[], help="also on this database (repeatable)")
    args = parser.parse_args()

    started_postgres = None
    urls: list[str | None] = [None, *args.database_url]
    if args.postgres:
        url = os.environ.get(postgres.URL_VARIABLE)
        if not url:
            started_postgres, url = postgres.start()
        urls.append(url)
    with tempfile.TemporaryDirectory(prefix="crud-load-") as tmp:
        servers = []
        try:
            for n, url in enumerate(urls):
                database = fresh_database(url)
                servers.append(LiveServer(Path(tmp) / f"data{n}", args=("--database-url", database) if database else ()).start())
            endpoints = [seeded_endpoints(server.api_url) for server in servers]
            results = [[Result(endpoint.name) for endpoint in server_endpoints] for server_endpoints in endpoints]
            for round_number in range(1, args.rounds + 1):
                for server, server_endpoints, server_results in zip(servers, endpoints, results):
                    for endpoint, result in zip(server_endpoints, server_results):
                        result.add(load(server.base_url, server.process.pid, endpoint, args.clients, args.seconds / args.rounds, args.warmup, args.max_requests))
                print(f"  round {round_number}: " + "; ".join(", ".join(f"{r.name} {r.rate:.0f}" for r in server_results) for server_results in results)
                      + " req/s so far", file=sys.stderr, flush=True)
            for server in servers:
                server.stop()
            costs = [store_costs(url) for url in urls]
        finally:
            for server in servers:
                server.stop()
            if started_postgres:
                postgres.stop(started_postgres)

    for url, server_results in zip(urls, results):
        print_table(kind(url), server_results, args)
    if len(urls) > 1:
        names = [kind(url) for url in urls]
        print(f"\n| {'endpoint':<32} | " + " | ".join(f"{name} req/s" for name in names) + " |")
        print(f"|{'-' * 34}|" + "|".join("-" * (len(name) + 7) + ":" for name in names) + "|")
        for row in zip(*results):
            print(f"| {row[0].name:<32} | " + " | ".join(f"{r.rate:{len(name) + 6}.0f}" for r, name in zip(row, names)) + " |")
    for url, store_cost in zip(urls, costs):
        print(f"\nThe store alone on {kind(url)}, in-process, one thread: " + ", ".join(f"{name} {us:.0f} µs" for name, us in store_cost.items()))


if __name__ == "__main__":
    main()
