"""Codex CLI (npm `@openai/codex`, pinned in tests/npm, which CI installs with `npm ci --prefix tests/npm`) run against
a server on this machine through the Responses API: a custom provider (`wire_api = "responses"`) in a temporary
CODEX_HOME, HOME a temporary folder, analytics off, any other connection sent to a proxy on a closed port.

Codex sets no `max_output_tokens` and has no setting for it, so an answer is bounded by the model's default
`max_tokens` (`parameters`; 2,048 for the bundled model). Codex fails a turn whose answer reaches a bound (it
reports the `incomplete` response as an error and exits 1), so a lower bound would make the sampled 135M model's
occasional rambling answer a failure rather than a longer run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from tests.live_server import PATIENT, LiveServer

CODEX = Path(__file__).resolve().parent / "npm" / "node_modules" / ".bin" / "codex"
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


def start_for_codex(server: LiveServer, model: str, ctx_len: int) -> None:
    """`model` started with `ctx_len` (room for Codex's prompt) and one sequence."""
    started = httpx.put(f"{server.api_url}/models/{model}/start", json={"ctx_len": ctx_len, "n_parallel": 1}, timeout=PATIENT)
    assert started.status_code == 200, started.text


def codex_env(tmp: Path, api_url: str, model: str, ctx_len: int) -> dict[str, str]:
    """Codex's folders under `tmp` (home, codex, work) with a provider at `api_url`; the environment to run it in."""
    for folder in ("home", "codex", "work"):
        (tmp / folder).mkdir(exist_ok=True)
    (tmp / "codex" / "config.toml").write_text(CONFIG.format(model=model, ctx_len=ctx_len, base_url=api_url))
    return {
        "PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "CODEX_HOME": str(tmp / "codex"), "JAN_API_KEY": "dummy",
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    }


def codex_exec(codex: Path | str, args: list[str], tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`codex exec --skip-git-repo-check ARGS` in `tmp`/work; the time limit only guards against a hang."""
    return subprocess.run([str(codex), "exec", "--skip-git-repo-check", *args], cwd=tmp / "work", env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=3600)


def logged_turns(tmp: Path) -> list[dict]:
    """Each turn of the session as Codex logged it: its requests, the last one's token counts, and its answer (a
    turn makes more than one request when the model calls a tool)."""
    (log,) = (tmp / "codex" / "sessions").rglob("rollout-*.jsonl")
    turns: list[dict] = []
    for line in log.read_text().splitlines():
        payload = json.loads(line).get("payload") or {}
        if payload.get("type") == "task_started":
            turns.append({"requests": 0})
        elif payload.get("type") == "token_count" and payload.get("info"):
            usage = payload["info"]["last_token_usage"]
            turns[-1].update({key: usage[key] for key in ("input_tokens", "cached_input_tokens", "output_tokens")})
            turns[-1]["requests"] += 1
        elif payload.get("type") == "task_complete":
            turns[-1]["answer"] = payload.get("last_agent_message")
    return turns
