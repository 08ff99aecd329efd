"""Claude Code, unchanged (the CLI pinned in tests/npm), answers `claude -p "Reply with the word hello."` through the
real server and bundled model, started with room for Claude Code's prompt (about 12,500 tokens: its system prompt and
its tools' JSON Schemas) and one sequence. Its answer is capped at 1,024 tokens (CLAUDE_CODE_MAX_OUTPUT_TOKENS; it
asks for 32,000 otherwise, which a 135M model can fill with rambling); a cap the sampled answer may reach makes Claude
Code exit 1 ("exceeded the 64 output token maximum", seen in CI), so it is well above the answers seen. Nothing leaves
the machine (tests/claude_cli.py)."""

from __future__ import annotations

import subprocess

import httpx

from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.claude_cli import CLAUDE, claude_env
from tests.live_server import PATIENT, LiveServer

CONTEXT = 32768


def test_claude_code_answers_through_the_server(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    assert CLAUDE.exists(), "install the npm tools: npm ci --prefix tests/npm"
    with LiveServer(tmp_path / "data", args=("--model-alias", f"claude-*={BUNDLED_MODEL_ID}")) as server:
        started = httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": CONTEXT, "n_parallel": 1}, timeout=PATIENT)
        assert started.status_code == 200, started.text
        run = subprocess.run([str(CLAUDE), "-p", "Reply with the word hello.", "--model", BUNDLED_MODEL_ID], cwd=tmp_path / "work",
                             env=claude_env(tmp_path / "home", server.base_url, 1024), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=1800)
        stats = httpx.get(f"{server.api_url}/models/{BUNDLED_MODEL_ID}", timeout=PATIENT).json()["metadata"]
    print(f"Claude Code answered: {run.stdout.strip()!r}; the model served {stats.get('completed_requests')} requests")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()
    assert stats["completed_requests"] >= 1 and stats["generated_tokens"] > 0 and stats["prompt_tokens_read"] > 10000
