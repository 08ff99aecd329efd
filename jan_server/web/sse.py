"""Server-Sent Events framing, shared by chat completion streams and download progress streams."""

from __future__ import annotations

import json


def event(payload: dict, name: str | None = None) -> bytes:
    """One event: `data:` with the payload as compact JSON, after an `event:` line when it is named."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return f"event: {name}\n".encode() + data if name else data
