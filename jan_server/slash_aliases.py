"""Let the spec's trailing-slash paths (`/assistants/`) answer without the slash too.

The seed declares `/assistants/`, while OpenAI clients call `/assistants`. A path is aliased only when
its slash-less form is not itself a spec path (`/threads/{thread_id}/` and `/threads/{thread_id}`
are different operations).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def slash_aliases(base_path: str, spec_paths: Iterable[str]) -> list[re.Pattern]:
    paths = set(spec_paths)
    aliased = [p[:-1] for p in paths if p.endswith("/") and len(p) > 1 and p[:-1] not in paths]
    return [re.compile("^" + re.escape(base_path) + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$") for p in aliased]


class SlashAliasMiddleware:
    """ASGI middleware, placed before Connexion's routing, that appends the slash to aliased paths."""

    def __init__(self, app, patterns: list[re.Pattern]):
        self.app = app
        self.patterns = patterns

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and any(p.match(scope["path"]) for p in self.patterns):
            scope = {**scope, "path": scope["path"] + "/", "raw_path": (scope.get("raw_path") or scope["path"].encode()) + b"/"}
        await self.app(scope, receive, send)
