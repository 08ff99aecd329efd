"""Claude Code, unchanged (the CLI pinned in tests/npm), runs `claude -p "Reply with the word hello."` through the
real server and bundled model, started with room for Claude Code's prompt (about 12,500 tokens: its system prompt and
its tools' JSON Schemas), YaRN stretching its 8,192 trained positions to fit, and one sequence. Nothing leaves the
machine (tests/claude_cli.py).

Claude Code asks for 32,000 output tokens; CLAUDE_CODE_MAX_OUTPUT_TOKENS caps them at 256. Under Claude Code's prompt
the 135M model echoes the prompt's last lines and loops ("Today's date is 2026-12-07. I'm not sure…", greedy too) to
that cap: Claude Code then asks it three times to resume and exits 1 saying the response exceeded the maximum, as
it would with Anthropic's API answering `stop_reason: max_tokens`. Either way the test checks, from Claude Code's
own session log, that it read the server's streamed answers: text with a stop reason, and no API error but that one."""

from __future__ import annotations

import json
import subprocess

import httpx

from jan_server.models.registry import BUNDLED_MODEL_ID
from tests.claude_cli import CLAUDE, claude_env
from tests.live_server import PATIENT, LiveServer

CONTEXT = 32768
MAX_OUTPUT = 256


def test_claude_code_runs_through_the_server(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    assert CLAUDE.exists(), "install the npm tools: npm ci --prefix tests/npm"
    with LiveServer(tmp_path / "data", args=("--model-alias", f"claude-*={BUNDLED_MODEL_ID}")) as server:
        started = httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": CONTEXT, "n_parallel": 1, "rope_scaling": "yarn"}, timeout=PATIENT)
        assert started.status_code == 200, started.text
        run = subprocess.run([str(CLAUDE), "-p", "Reply with the word hello.", "--model", BUNDLED_MODEL_ID], cwd=tmp_path / "work",
                             env=claude_env(tmp_path / "home", server.base_url, MAX_OUTPUT), stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=1800)
        stats = httpx.get(f"{server.api_url}/models/{BUNDLED_MODEL_ID}", timeout=PATIENT).json()["metadata"]
    answers, errors = logged_answers(tmp_path / "home")
    print(f"Claude Code printed {run.stdout.strip()[:300]!r} (exit {run.returncode}); its log: {answers}, errors {errors}")
    assert answers and all(text.strip() for _, text in answers)
    if run.returncode == 0:
        assert run.stdout.strip() and not errors and answers[-1][0] == "end_turn"
    else:  # the model's answer reached the cap every time Claude Code asked
        assert f"exceeded the {MAX_OUTPUT} output token maximum" in run.stdout, run.stderr[-2000:]
        assert [reason for reason, _ in answers] == ["max_tokens"] * len(answers) and len(errors) == 1
    assert stats["completed_requests"] >= len(answers) and stats["prompt_tokens_read"] > 10000
    assert (stats["rope_scaling"], stats["rope_scale"]) == ("yarn", CONTEXT / 8192)  # the trained context


def logged_answers(home) -> tuple[list[tuple[str, str]], list[str]]:
    """From Claude Code's session log: each answer it read (stop reason, text) and each API error it reported."""
    (log,) = (home / ".claude" / "projects").rglob("*.jsonl")
    answers, errors = [], []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") != "assistant":
            continue
        message = entry["message"]
        text = "".join(block.get("text", "") for block in message["content"] if block.get("type") == "text")
        if entry.get("isApiErrorMessage"):
            errors.append(text)
        else:
            answers.append((message["stop_reason"], text))
    return answers, errors
