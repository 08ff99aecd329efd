"""Codex CLI, unchanged, against jan-server: the real CLI from npm answers `codex exec --skip-git-repo-check "Reply
with the word hello."` through the Responses API (a custom provider, `wire_api = "responses"`), then a second turn
of the same session (`codex exec resume --last …`) continues it. The bundled model is started with a 16,384-token
context and one sequence: Codex sends about 9,200 prompt tokens
(its instructions, environment context and tools: function tools, a `namespace` of sub-agent tools and
`web_search`, which is left out). Prints each turn's answer, exit code, time and token counts from Codex's own
session log; the second turn's prompt holds the first turn (the prompt cache serves it).

Codex reaches nothing but the server (tests/codex_cli.py). It is the CLI pinned in tests/npm:

    npm ci --prefix tests/npm
    python bench/codex_cli.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.codex_cli import CODEX, FIRST, SECOND, codex_env, codex_exec, logged_turns, start_for_codex  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codex", default=str(CODEX), help="the CLI (default: the one pinned in tests/npm)")
    parser.add_argument("--ctx-len", type=int, default=16384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with LiveServer(tmp / "data") as server:
            start_for_codex(server, BUNDLED_MODEL_ID, args.ctx_len)
            env = codex_env(tmp, server.api_url, BUNDLED_MODEL_ID, args.ctx_len)
            for name, argv in (("first", [FIRST]), ("second", ["resume", "--last", SECOND])):
                began = time.perf_counter()
                done = codex_exec(args.codex, argv, tmp, env)
                print(f"{name} turn: exit {done.returncode} after {time.perf_counter() - began:.0f} s, answer {done.stdout.strip()!r}")
                if done.returncode:
                    print(f"stderr: {done.stderr.strip()[-2000:]}")
            logged = logged_turns(tmp)
    for number, turn in enumerate(logged, 1):
        print(f"turn {number} as Codex logged it: {turn}")
    if len(logged) == 2:
        print(f"the second turn continues the first: {logged[1]['cached_input_tokens'] >= logged[0]['input_tokens']} "
              f"(its prompt reuses {logged[1]['cached_input_tokens']} of the first turn's {logged[0]['input_tokens']} + answer)")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
