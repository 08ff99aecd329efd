"""Codex CLI, unchanged, against jan-server: the real CLI from npm answers `codex exec --skip-git-repo-check "Reply
with the word hello."` through the Responses API (a custom provider, `wire_api = "responses"`), then a second turn
of the same session (`codex exec resume --last …`) continues it. The bundled model is started with a 16,384-token
context and one sequence: Codex sends about 9,200 prompt tokens (its instructions, environment and tools: function
tools, a `namespace` of sub-agent tools and `web_search`, which is left out). Prints each turn's answer, exit code,
time and token counts from Codex's own session log; the second turn's prompt holds the first turn (the prompt
cache serves it).

Codex reaches nothing but the server: CODEX_HOME and HOME are temporary folders, its analytics are off and any
other connection goes to a proxy on a closed port. Install the CLI first (pinned; `npm` from Node 20 is enough):

    npm install -g --prefix /tmp/codex @openai/codex@0.171.0
    python bench/codex_cli.py --codex /tmp/codex/bin/codex
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.live_server import PATIENT, LiveServer  # noqa: E402

FIRST = "Reply with the word hello."
SECOND = "Now reply with the word bye."
CONFIG = """model = "{model}"
model_provider = "jan"
model_context_window = {ctx_len}

[analytics]
enabled = false

[model_providers.jan]
name = "jan-server"
base_url = "{base_url}"
wire_api = "responses"
env_key = "JAN_API_KEY"
# a small machine may read Codex's prompt for minutes before the first event: wait, and fail rather than retry
stream_idle_timeout_ms = 3600000
stream_max_retries = 0
request_max_retries = 0
"""


def codex_env(tmp: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "CODEX_HOME": str(tmp / "codex"), "JAN_API_KEY": "dummy",
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    }


def turns(codex_home: Path) -> list[dict]:
    """Each turn of the session as Codex logged it: its answer and its last request's token counts."""
    (log,) = (codex_home / "sessions").rglob("rollout-*.jsonl")
    out = []
    for line in log.read_text().splitlines():
        payload = json.loads(line).get("payload") or {}
        if payload.get("type") == "token_count" and payload.get("info"):
            usage = payload["info"]["last_token_usage"]
            out.append({"input_tokens": usage["input_tokens"], "cached_input_tokens": usage["cached_input_tokens"], "output_tokens": usage["output_tokens"]})
        elif payload.get("type") == "task_complete":
            out[-1]["answer"] = payload.get("last_agent_message")
    return out


def run(codex: str, args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    done = subprocess.run([codex, "exec", "--skip-git-repo-check", *args], cwd=tmp / "work", env=codex_env(tmp), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=3600)
    return done, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codex", default="codex", help="the CLI (default: codex on PATH)")
    parser.add_argument("--ctx-len", type=int, default=16384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for folder in ("home", "codex", "work"):
            (tmp / folder).mkdir()
        with LiveServer(tmp / "data") as server:
            start = {"ctx_len": args.ctx_len, "n_parallel": 1}
            httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json=start, timeout=PATIENT).raise_for_status()
            (tmp / "codex" / "config.toml").write_text(CONFIG.format(model=BUNDLED_MODEL_ID, ctx_len=args.ctx_len, base_url=server.api_url))
            for name, argv in (("first", [FIRST]), ("second", ["resume", "--last", SECOND])):
                done, seconds = run(args.codex, argv, tmp)
                print(f"{name} turn: exit {done.returncode} after {seconds:.0f} s, answer {done.stdout.strip()!r}")
                if done.returncode:
                    print(f"stderr: {done.stderr.strip()[-2000:]}")
            logged = turns(tmp / "codex")
    for number, turn in enumerate(logged, 1):
        print(f"turn {number} as Codex logged it: {turn}")
    if len(logged) == 2:
        print(f"the second turn continues the first: {logged[1]['cached_input_tokens'] >= logged[0]['input_tokens']} "
              f"(its prompt reuses {logged[1]['cached_input_tokens']} of the first turn's {logged[0]['input_tokens']} + answer)")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
