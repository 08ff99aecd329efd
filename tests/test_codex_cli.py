"""Codex CLI, unchanged (the CLI pinned in tests/npm), answers `codex exec --skip-git-repo-check "Reply with the word
hello."` through the real server and the bundled weights, then a second turn of the same session (`codex exec resume
--last …`) continues it. Codex sends about 9,200 prompt tokens (its instructions, environment and tools: function
tools, a `namespace` of sub-agent tools, and `web_search`, which is left out), so the model is started with a
16,384-token context and one sequence. Codex sends no temperature nor `max_output_tokens` and fails a turn whose
answer reaches the bound (2,048 tokens), which the 135M model sampled at its default 0.7 sometimes loops to (1 or 2
of 5 cold first turns seen), so it is given the weights answering greedily (tests/live_server.py's `greedy_model`), as
the README tells a user. Nothing leaves the machine; bench/codex_cli.py runs the same and prints timings."""

from __future__ import annotations

import httpx

from tests.codex_cli import CODEX, FIRST, SECOND, codex_env, codex_exec, logged_turns, start_for_codex
from tests.live_server import PATIENT, LiveServer, greedy_model

CONTEXT = 16384


def test_codex_answers_and_a_second_turn_continues_the_session(tmp_path):
    assert CODEX.exists(), "install the npm tools: npm ci --prefix tests/npm"
    model = greedy_model(tmp_path / "data")
    with LiveServer(tmp_path / "data") as server:
        start_for_codex(server, model, CONTEXT)
        env = codex_env(tmp_path, server.api_url, model, CONTEXT)
        first = codex_exec(CODEX, [FIRST], tmp_path, env)
        assert first.returncode == 0, first.stderr[-2000:]
        second = codex_exec(CODEX, ["resume", "--last", SECOND], tmp_path, env)
        assert second.returncode == 0, second.stderr[-2000:]
        stats = httpx.get(f"{server.api_url}/models/{model}", timeout=PATIENT).json()["metadata"]
    turns = logged_turns(tmp_path)
    print(f"Codex answered {first.stdout.strip()!r}, then {second.stdout.strip()!r}; its log: {turns}; the model's stats: {stats}")
    assert len(turns) == 2 and all((turn.get("answer") or "").strip() for turn in turns)
    # Codex sends the session whole (store: false): the second turn's request holds the first turn's prompt and answer
    assert turns[1]["input_tokens"] > turns[0]["input_tokens"] + turns[0]["output_tokens"] > 6000
    assert stats["completed_requests"] == turns[0]["requests"] + turns[1]["requests"]
