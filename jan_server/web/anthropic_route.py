"""The conversation a Messages request continues, from what its client tells (jan_server.models.slots): a
`metadata.user_id` and a `cache_control` marker.

The route is a hash of the user id and the request's content up to and including its first marked block, in
Anthropic's cache order (tools, system, messages). Claude Code marks its system prompt first and sends a session's
id as `user_id`, so a session's turns share a route while its background requests (another system prompt, the
same id) get another and leave the session's slot alone. Without a user id there is no route: sessions sharing a
system prompt would claim one slot, and prefix matching seats them better.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterator

from jan_server.models.jobs import route


def route_of(body: dict) -> str | None:
    """The job's route (and label) of a Messages request; None without a user id or a marker."""
    user = (body.get("metadata") or {}).get("user_id")
    if not user:
        return None
    prefix = []
    for block in blocks(body):
        prefix.append({key: value for key, value in block.items() if key != "cache_control"})
        if block.get("cache_control"):
            given = json.dumps([user, prefix], ensure_ascii=False, sort_keys=True)
            return route("cache", hashlib.sha256(given.encode()).hexdigest()[:16])
    return None


def blocks(body: dict) -> Iterator[dict]:
    """The request's tools, system blocks and message blocks (each with its message's role), in cache order."""
    yield from body.get("tools") or ()
    system = body.get("system")
    yield from [{"type": "text", "text": system}] if isinstance(system, str) else system or ()
    for message in body["messages"]:
        content = message["content"]
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            yield {"role": message["role"], **block}
