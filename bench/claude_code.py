"""Claude Code, unchanged, against jan-server: the real CLI from npm answers `claude -p "Reply with the word hello."
--model smollm2-135m-instruct` through the Messages API, its `claude-…` names aliased to the bundled model, which is
started with a 32,768-token context and one sequence (Claude Code sends 12,000-20,000 prompt tokens: its system
prompt and the JSON Schemas of its tools). Prints the answer, the exit code and where the time went.

The CLI reaches nothing but the server (tests/claude_cli.py). It is the one pinned in tests/npm (`npm ci --prefix
tests/npm`; `npm` from Node 20 is enough); tests/test_claude_code.py runs the same with --max-output-tokens 64.

    python bench/claude_code.py [--claude tests/npm/node_modules/.bin/claude] [--max-output-tokens 64]

`--max-output-tokens` sets CLAUDE_CODE_MAX_OUTPUT_TOKENS (Claude Code asks for 32,000 otherwise, which the server
caps at the room left in the context).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models.registry import BUNDLED_MODEL_ID  # noqa: E402
from tests.claude_cli import CLAUDE, claude_env  # noqa: E402
from tests.live_server import PATIENT, LiveServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claude", default=str(CLAUDE), help="the CLI (default: the one pinned in tests/npm)")
    parser.add_argument("--max-output-tokens", type=int, default=None)
    parser.add_argument("--ctx-len", type=int, default=32768)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "home").mkdir()
        (tmp / "work").mkdir()
        with LiveServer(tmp / "data", args=("--model-alias", f"claude-*={BUNDLED_MODEL_ID}")) as server:
            start = {"ctx_len": args.ctx_len, "n_parallel": 1}
            httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json=start, timeout=PATIENT).raise_for_status()
            began = time.perf_counter()
            run = subprocess.run([args.claude, "-p", "Reply with the word hello.", "--model", BUNDLED_MODEL_ID], cwd=tmp / "work",
                                 env=claude_env(tmp / "home", server.base_url, args.max_output_tokens), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True)
            seconds = time.perf_counter() - began
            stats = httpx.get(f"{server.api_url}/models/{BUNDLED_MODEL_ID}", timeout=PATIENT).json()["metadata"]
    print(f"exit {run.returncode} after {seconds:.0f} s\nanswer: {run.stdout.strip()!r}\nstderr: {run.stderr.strip()[-2000:]}")
    print({key: stats.get(key) for key in ("prompt_tokens_read", "cached_prompt_tokens", "generated_tokens", "completed_requests", "cancelled_requests")})
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
