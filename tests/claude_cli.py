"""Claude Code's CLI (pinned in tests/npm, which CI installs with `npm ci --prefix tests/npm`) run against a server
on this machine: its nonessential traffic off, HOME a temporary folder, any other connection sent to a proxy on a
closed port."""

from __future__ import annotations

import os
from pathlib import Path

CLAUDE = Path(__file__).resolve().parent / "npm" / "node_modules" / ".bin" / "claude"


def claude_env(home: Path, base_url: str, max_output_tokens: int | None) -> dict[str, str]:
    """The CLI's environment; `max_output_tokens` sets CLAUDE_CODE_MAX_OUTPUT_TOKENS (it asks for 32,000 otherwise)."""
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_ENABLE_TELEMETRY": "0", "API_TIMEOUT_MS": str(3600 * 1000),
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    }
    if max_output_tokens:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output_tokens)
    return env
